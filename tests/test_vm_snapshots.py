"""Pause, resume and fork of VM sessions through the public API, on real TCG guests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio

from tests.conftest import System, start_system, stop_system, wait_until
from tests.endpoints import receive, receive_until, send, websocket
from tests.test_endpoints_leases import closed_reason, leases
from tests.test_isolation import address_of

VM_IMAGE = "debian:bookworm-vm"

# A process whose state lives in its memory: a counter it keeps writing out.
COUNTER = "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done' >/dev/null 2>&1 & echo $!"


async def exec_in(system: System, session_id: str, command: str) -> dict[str, Any]:
    response = await system.client.post(
        "/v1/exec", json={"session_id": session_id, "command": command, "timeout_ms": 60_000}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert result["exit_code"] == 0, result
    return result


async def create_vm(system: System) -> dict[str, Any]:
    response = await system.client.post("/v1/sessions", json={"ephemeral": True, "image": VM_IMAGE})
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


async def test_pause_resume_three_times_keeps_processes_and_files(vm_system: System) -> None:
    session = await create_vm(vm_system)
    sid = session["id"]
    counter_pid = (await exec_in(vm_system, sid, COUNTER))["output"].strip()
    for round_ in (1, 2, 3):
        before = await exec_in(
            vm_system, sid, f"echo disk-{round_} >> /root/notes; echo mem-{round_} > /tmp/mem-{round_}; cat /tmp/count"
        )
        count_before = int(before["output"])

        paused = await vm_system.client.post(f"/v1/sessions/{sid}/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["status"] == "paused"
        assert (await vm_system.client.get("/v1/sessions", params={"status": "paused"})).json()["sessions"][0][
            "id"
        ] == sid
        refused = await vm_system.client.post("/v1/exec", json={"session_id": sid, "command": "true"})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "session_not_running"
        assert vm_system.vms() == [], "a paused session has no QEMU running"

        resumed = await vm_system.client.post(f"/v1/sessions/{sid}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "running"
        # The first exec right after the resume answers: no retry, no wait.
        after = await exec_in(
            vm_system,
            sid,
            f"cat /root/notes /tmp/mem-*; kill -0 {counter_pid} && echo alive; cat /tmp/count; "
            "sleep 0.5; cat /tmp/count",
        )
        lines = after["output"].split()
        assert lines[:round_] == [f"disk-{r}" for r in range(1, round_ + 1)]
        assert lines[round_ : 2 * round_] == [f"mem-{r}" for r in range(1, round_ + 1)]
        assert lines[2 * round_] == "alive"
        count_resumed, count_later = int(lines[2 * round_ + 1]), int(lines[2 * round_ + 2])
        # The counter went on from where it was (its memory survived), and still runs.
        assert count_before <= count_resumed < count_later

    deleted = await vm_system.client.delete(f"/v1/sessions/{sid}")
    assert deleted.json()["status"] == "terminated"


async def test_fork_one_snapshot_into_two_sessions_that_diverge_and_are_audited(vm_system: System) -> None:
    source = await create_vm(vm_system)
    await exec_in(vm_system, source["id"], "mkdir /srv/t; echo from-the-source > /srv/t/shared; echo mem > /tmp/shared")
    refused = await vm_system.client.post(f"/v1/sessions/{source['id']}/fork")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "session_not_paused"
    assert (await vm_system.client.post(f"/v1/sessions/{source['id']}/pause")).status_code == 200

    forks = []
    for _ in range(2):
        response = await vm_system.client.post(f"/v1/sessions/{source['id']}/fork")
        assert response.status_code == 201, response.text
        fork = response.json()
        assert fork["status"] == "running" and fork["forked_from"] == source["id"] and fork["image"] == VM_IMAGE
        forks.append(fork)
    a, b = (f["id"] for f in forks)

    # Both start from the source's disk and memory, each with its own network slot and address...
    addresses = {address_of(s, vm_system)["address"] for s in (source, *forks)}
    assert len(addresses) == 3
    for fork in forks:
        shared = await exec_in(
            vm_system,
            fork["id"],
            "cat /srv/t/shared /tmp/shared /run/chaser/session-id; /run/chaser/busybox ip -4 -o addr show eth0",
        )
        assert shared["output"].split()[:3] == ["from-the-source", "mem", fork["id"]]
        assert f"inet {address_of(fork, vm_system)['address']}/30" in shared["output"]
    # ...and then go their own ways: disks, and random streams reseeded apart.
    await exec_in(vm_system, a, "echo a > /srv/t/mine")
    await exec_in(vm_system, b, "echo b > /srv/t/mine; rm /srv/t/shared")
    random = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'"
    seen_a = await exec_in(vm_system, a, f"cat /srv/t/mine; ls /srv/t; {random}")
    seen_b = await exec_in(vm_system, b, f"cat /srv/t/mine; ls /srv/t; {random}")
    assert seen_a["output"].split()[:3] == ["a", "mine", "shared"]
    assert seen_b["output"].split()[:2] == ["b", "mine"] and len(seen_b["output"].split()) == 3
    assert seen_a["output"].split()[-1] != seen_b["output"].split()[-1]

    # The source, resumed, never saw its forks' writes.
    assert (await vm_system.client.post(f"/v1/sessions/{source['id']}/resume")).status_code == 200
    mine = await vm_system.client.post(
        "/v1/exec", json={"session_id": source["id"], "command": "ls /srv/t; cat /srv/t/shared"}
    )
    assert mine.json()["output"].split() == ["shared", "from-the-source"]

    # Another account can neither pause, resume nor fork it: to them it does not exist.
    stranger = {"Authorization": f"Bearer {await vm_system.new_key('stranger@test.invalid')}"}
    for action in ("pause", "resume", "fork"):
        response = await vm_system.client.post(f"/v1/sessions/{source['id']}/{action}", headers=stranger)
        assert response.status_code == 404 and response.json()["error"]["code"] == "session_not_found"
    assert (await vm_system.client.get(f"/v1/sessions/{source['id']}")).json()["status"] == "running"

    # Each of those calls is in the audit trail, with the session it acted on (the fork: the new one).
    trail = (await vm_system.client.get("/v1/audit", params={"limit": "100"})).json()["events"]
    done = [(e["action"], e["resource"]["id"], e["status"]) for e in trail if e["result"] == "success"]
    assert ("session.pause", source["id"], 200) in done and ("session.resume", source["id"], 200) in done
    assert {(a, 201), (b, 201)} <= {(i, status) for action, i, status in done if action == "session.fork"}
    refused = [e for e in trail if e["action"] == "session.fork" and e["result"] == "failure"]
    assert refused and refused[-1]["error_code"] == "session_not_paused"

    for session_id in (source["id"], a, b):
        await vm_system.client.delete(f"/v1/sessions/{session_id}")


async def test_a_guest_kernel_panic_ends_the_session(vm_system: System) -> None:
    session = await create_vm(vm_system)
    crashed = await vm_system.client.post(
        "/v1/exec", json={"session_id": session["id"], "command": "echo c > /proc/sysrq-trigger"}
    )
    # The command never returns: it ends with its VM, as killed (as under a container destroyed).
    assert crashed.status_code == 200, crashed.text
    assert crashed.json()["exit_code"] == 137 and not crashed.json()["timed_out"]

    async def reported() -> bool:
        current = (await vm_system.client.get(f"/v1/sessions/{session['id']}")).json()
        return bool(current["status"] == "terminated")

    await wait_until(reported, timeout=30)
    current = (await vm_system.client.get(f"/v1/sessions/{session['id']}")).json()
    assert current["status_reason"] == "the sandbox stopped on its host"
    assert vm_system.vms() == []


async def test_containers_cannot_be_paused(vm_system: System) -> None:
    session = (await vm_system.client.post("/v1/sessions", json={"ephemeral": True, "image": "default"})).json()
    response = await vm_system.client.post(f"/v1/sessions/{session['id']}/pause")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "unsupported"
    assert (await vm_system.client.get(f"/v1/sessions/{session['id']}")).json()["status"] == "running"
    await exec_in(vm_system, session["id"], "true")
    await vm_system.client.delete(f"/v1/sessions/{session['id']}")


async def test_warm_start_forks_a_booted_template(nursery: trio.Nursery, tmp_path: Path, vm_images_dir: Path) -> None:
    system = await start_system(
        nursery,
        tmp_path,
        vm_images_dir,
        f"sqlite:///{tmp_path / 'db'}",
        agent_overrides={"vm_warm_start": True},
    )
    try:
        cold = await create_vm(system)
        templates = system.qemu_path / "templates"

        async def template_ready() -> bool:
            return any(templates.glob("*/memory.snap"))

        await wait_until(template_ready, timeout=180)
        warm = [await create_vm(system) for _ in range(2)]
        for session in (cold, *warm):
            console = (system.qemu_path / "sandboxes" / session["id"] / "console.log").read_text()
            # The guest agent says "ready" when it starts: in a cold boot, not in a fork of the template.
            assert ("chaser-guest: ready" in console) == (session is cold)
        random = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'"
        seen = []
        for session in warm:
            result = await exec_in(system, session["id"], f"cat /run/chaser/session-id; date +%s; {random}")
            session_id, guest_time, noise = result["output"].split()
            assert session_id == session["id"]
            assert abs(int(guest_time) - time.time()) < 30  # the clock was set, not left at the template's
            seen.append(noise)
        assert seen[0] != seen[1]
        for session in (cold, *warm):
            await system.client.delete(f"/v1/sessions/{session['id']}")
    finally:
        await stop_system(system)


async def test_lifecycle_routes_refuse_clearly(sqlite_system: System) -> None:
    client = sqlite_system.client
    for action in ("pause", "resume", "fork"):
        for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
            response = await client.post(f"/v1/sessions/{bad}/{action}")
            assert response.status_code == 404 and response.json()["error"]["code"] == "session_not_found"
    session = (await client.post("/v1/sessions", json={"ephemeral": True})).json()
    assert (await client.post(f"/v1/sessions/{session['id']}/resume")).json()["status"] == "running"  # no-op
    await client.delete(f"/v1/sessions/{session['id']}")
    for action, code in (("pause", "session_not_running"), ("resume", "session_not_paused")):
        response = await client.post(f"/v1/sessions/{session['id']}/{action}")
        assert response.status_code == 409 and response.json()["error"]["code"] == code
    other = await sqlite_system.new_key("other@test.invalid")
    response = await client.post(f"/v1/sessions/{session['id']}/fork", headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 404
    limited = await sqlite_system.new_key("owner@test.invalid", scopes=["sessions.read"])
    response = await client.post(f"/v1/sessions/{session['id']}/pause", headers={"Authorization": f"Bearer {limited}"})
    assert response.status_code == 403


async def test_pause_refuses_open_connections_unless_forced_and_endpoints_work_after_resume(
    vm_system: System,
) -> None:
    session = await create_vm(vm_system)
    sid = session["id"]
    async with websocket(vm_system, sid, "pty") as ws:
        await receive(ws)
        await send(ws, t="open", ch=1, cmd="sleep 600")
        assert (await receive(ws))["t"] == "opened"
        assert await leases(vm_system, sid) == 1
        refused = await vm_system.client.post(f"/v1/sessions/{sid}/pause")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "active_connections"
        assert (await vm_system.client.get(f"/v1/sessions/{sid}")).json()["status"] == "running"
        forced = await vm_system.client.post(f"/v1/sessions/{sid}/pause", params={"force": "true"})
        assert forced.status_code == 200 and forced.json()["status"] == "paused"
        reason = await closed_reason(ws)
        assert "paused" in reason.reason
    assert await leases(vm_system, sid) == 0
    refused = await vm_system.client.get(f"/s/{sid}/pty")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "session_not_running"

    assert (await vm_system.client.post(f"/v1/sessions/{sid}/resume")).status_code == 200
    async with websocket(vm_system, sid, "pty") as ws:
        await receive(ws)
        await send(ws, t="open", ch=2, cmd="echo back-$((40+2))")
        frames = await receive_until(ws, "exit")
    assert b"back-42" in b"".join(f.get("d", b"") for f in frames if f["t"] == "out")
    put = await vm_system.client.put(f"/s/{sid}/files/root/after-resume", content=b"ok")
    assert put.status_code == 201, put.text
    assert (await vm_system.client.get(f"/s/{sid}/files/root/after-resume")).content == b"ok"
    await vm_system.client.delete(f"/v1/sessions/{sid}")
