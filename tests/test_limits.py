"""Per-session limits: validated against host maxima, persisted, and enforced inside the session only.

Each abuse is a real attempt from inside a real session: allocating past the
memory limit, a fork bomb, filling the disk. Afterwards the same session (or
another one) and the host still work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import System


async def new_session(system: System, **fields: Any) -> dict[str, Any]:
    response = await system.client.post("/v1/sessions", json={"ephemeral": True, **fields})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def run(system: System, session: dict[str, Any], command: str, timeout_ms: int = 60_000) -> dict[str, Any]:
    response = await system.client.post(
        "/v1/exec", json={"session_id": session["id"], "command": command, "timeout_ms": timeout_ms}
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_limits_are_resolved_persisted_and_shown(system: System) -> None:
    session = await new_session(system, limits={"cpus": 0.5, "memory_mb": 256})
    expected = {"cpus": 0.5, "memory_mb": 256, "pids": 1024, "disk_mb": 4096}  # the rest: host defaults
    assert session["limits"] == expected
    shown = (await system.client.get(f"/v1/sessions/{session['id']}")).json()
    assert shown["limits"] == expected and shown["network"] == "none"
    # What the kernel enforces, read from the session's own cgroup.
    result = await run(
        system,
        session,
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes"
        " /sys/fs/cgroup/pids/pids.max",
    )
    assert result["output"].split() == ["50000", str(256 << 20), "1024"]


async def test_limits_above_host_maxima_are_refused(system: System) -> None:
    too_much = [{"memory_mb": 1 << 23}, {"cpus": 512.0}, {"pids": 1 << 21}, {"disk_mb": 1 << 20}]
    for limits in too_much:
        response = await system.client.post("/v1/sessions", json={"ephemeral": True, "limits": limits})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "limit_exceeded" and "maximum" in error["message"]
    response = await system.client.post("/v1/exec", json={"ephemeral": True, "command": "true", "limits": too_much[0]})
    assert response.status_code == 422
    assert (await system.client.get("/v1/sessions")).json()["sessions"] == []


async def test_bad_network_and_limit_fields_are_422(system: System) -> None:
    bodies = [
        {"network": "bridged"},
        {"egress_allow": [{"cidr": "10.0.0.0/33"}]},
        {"egress_allow": [{"cidr": "not-a-network"}]},
        {"egress_allow": [{"cidr": "2001:db8::/32"}]},
        {"egress_allow": [{"cidr": "203.0.113.0/24", "ports": [0]}]},
        {"egress_allow": [{"cidr": "203.0.113.0/24", "protocol": "tcp"}]},
        {"network": "none", "egress_allow": [{"cidr": "203.0.113.0/24"}]},
        {"limits": {"memory_mb": -1}},
        {"limits": {"cpus": "2"}},
        {"limits": {"swap_mb": 1}},
    ]
    for extra in bodies:
        response = await system.client.post("/v1/sessions", json={"ephemeral": True, **extra})
        assert response.status_code == 422, (extra, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    session = await new_session(system)
    response = await system.client.post(
        "/v1/exec", json={"session_id": session["id"], "command": "true", "limits": {"cpus": 1.0}}
    )
    assert response.status_code == 422, response.text


async def test_memory_overrun_kills_inside_the_session_only(sqlite_system: System) -> None:
    session = await new_session(sqlite_system, limits={"memory_mb": 128})
    other = await new_session(sqlite_system)
    hog = await run(sqlite_system, session, "python3 -c 'x = bytearray(512 << 20); print(\"allocated\")'")
    assert hog["exit_code"] == 137 and "allocated" not in hog["output"], hog
    assert (await run(sqlite_system, session, "echo alive"))["output"] == "alive\n"
    assert (await run(sqlite_system, other, "echo alive"))["output"] == "alive\n"


async def test_fork_bomb_stays_inside(sqlite_system: System) -> None:
    session = await new_session(sqlite_system, limits={"pids": 64, "cpus": 0.5})
    other = await new_session(sqlite_system)
    bomb = await run(sqlite_system, session, "bomb() { bomb | bomb & }; bomb; sleep 30", timeout_ms=4000)
    assert bomb["timed_out"] is True
    assert (await run(sqlite_system, session, "cat /sys/fs/cgroup/pids/pids.max"))["output"].strip() == "64"
    assert (await run(sqlite_system, other, "echo alive"))["output"] == "alive\n"
    # The session can be terminated, bomb and all.
    ended = await sqlite_system.client.delete(f"/v1/sessions/{session['id']}")
    assert ended.json()["status"] == "terminated"
    # And its cgroups (LXC's monitor's included) are gone with it.
    assert not [*Path("/sys/fs/cgroup").glob(f"*/lxc.*.{session['id']}*")]


async def test_full_disk_fails_writes_inside_the_session_only(sqlite_system: System) -> None:
    session = await new_session(sqlite_system, limits={"disk_mb": 64})
    other = await new_session(sqlite_system)
    fill = await run(sqlite_system, session, "dd if=/dev/zero of=/root/big bs=1M count=256 2>&1; sync")
    assert "Disk quota exceeded" in fill["output"], fill
    assert (await run(sqlite_system, session, "rm /root/big && echo freed > /root/small && cat /root/small"))[
        "output"
    ] == "freed\n"
    wrote = await run(sqlite_system, other, "dd if=/dev/zero of=/root/big bs=1M count=96 2>&1 && echo ok")
    assert wrote["output"].endswith("ok\n"), wrote
