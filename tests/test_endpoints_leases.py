"""Connection leases and session lifetime: 409 on terminate, expiry, idle, no phantoms."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lxc
import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.conftest import System, start_system, stop_system, wait_until
from tests.endpoints import new_session, receive, receive_until, send, websocket


async def leases(system: System, session_id: str) -> Any:
    return (await system.client.get(f"/v1/sessions/{session_id}")).json()["active_connection_leases"]


async def closed_reason(ws: Any, timeout: float = 20) -> Any:
    with trio.fail_after(timeout):
        while True:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason


async def test_terminate_is_refused_while_connected_and_forced_closes(system: System) -> None:
    session = await new_session(system)
    async with websocket(system, session["id"], "pty") as ws:
        await receive(ws)
        await send(ws, t="open", ch=1, cmd="sleep 600")
        assert (await receive(ws))["t"] == "opened"
        assert await leases(system, session["id"]) == 1
        refused = await system.client.delete(f"/v1/sessions/{session['id']}")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "active_connections"
        assert (await system.client.get(f"/v1/sessions/{session['id']}")).json()["status"] == "running"
        forced = await system.client.delete(f"/v1/sessions/{session['id']}", params={"force": "true"})
        assert forced.status_code == 200 and forced.json()["status"] == "terminated"
        reason = await closed_reason(ws)
        assert reason.code == 4000 and "terminated" in reason.reason
    after = await system.client.get(f"/s/{session['id']}/pty")
    assert after.status_code == 409 and after.json()["error"]["code"] == "session_not_running"
    assert await leases(system, session["id"]) == 0


async def test_vanished_client_and_ping_only_client_lose_their_leases(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path
) -> None:
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}",
        agent_overrides={"lease_keepalive_timeout": 1.0, "lease_idle_timeout": 2.0},
    )  # fmt: skip
    try:
        session = await new_session(system)
        async with websocket(system, session["id"], "exec") as silent:
            await receive(silent)
            await send(silent, t="exec", cmd="sleep 600")
            assert (await receive(silent))["t"] == "started"
            # ...and then nothing: no frame, no ping, as if the client's machine went away.
            reason = await closed_reason(silent)
            assert reason.code == 4000 and "keepalive" in reason.reason
        async with websocket(system, session["id"], "pty") as pinging:
            await receive(pinging)
            await send(pinging, t="open", ch=1, cmd="sleep 600")
            await receive(pinging)
            with trio.fail_after(20):
                while True:
                    try:
                        await send(pinging, t="ping")
                        assert (await receive(pinging, timeout=1))["t"] in ("pong", "error")
                    except ConnectionClosed as exc:
                        assert exc.reason.code == 4000 and "no traffic but keepalives" in exc.reason.reason
                        break
                    await trio.sleep(0.3)
        assert await leases(system, session["id"]) == 0
        ps = await system.client.post("/v1/exec", json={"session_id": session["id"], "command": "ps -eo args="})
        assert "sleep 600" in ps.json()["output"]  # the terminal outlives its lease; the exec did not
        await system.client.delete(f"/v1/sessions/{session['id']}")
    finally:
        await stop_system(system)


async def test_a_client_that_stops_reading_is_dropped(nursery: trio.Nursery, tmp_path: Path, images_dir: Path) -> None:
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", agent_overrides={"slow_client_timeout": 1.0}
    )
    try:
        session = await new_session(system)
        async with websocket(system, session["id"], "pty") as reader:
            await receive(reader)
            await send(reader, t="open", ch=1, cmd="yes")
            pty = (await receive(reader))["pty"]
            # This client reads nothing more; the other keeps up.
            await wait_until(lambda: _is(leases(system, session["id"]), 0), timeout=30)
            async with websocket(system, session["id"], "pty") as other:
                await receive(other)
                await send(other, t="attach", ch=1, pty=pty)
                assert (await receive(other))["t"] == "opened"
                assert b"y\r\n" in (await receive(other))["d"]
                await send(other, t="close", ch=1)
                await receive_until(other, "exit")
        await system.client.delete(f"/v1/sessions/{session['id']}")
    finally:
        await stop_system(system)


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_agent_restart_leaves_no_phantom_leases(nursery: trio.Nursery, tmp_path: Path, images_dir: Path) -> None:
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", agent_overrides={"destroy_on_shutdown": False}
    )
    try:
        session = await new_session(system)
        async with websocket(system, session["id"], "pty") as ws:
            await receive(ws)
            await send(ws, t="open", ch=1, cmd="sleep 600")
            await receive(ws)
            await wait_until(lambda: _stored(system, session["id"], 1))
            await system.agent.stop()
            await closed_reason(ws)
        system.agent.config.destroy_on_shutdown = True
        await system.agent.start(nursery)
        await wait_until(lambda: _stored(system, session["id"], 0))
        assert await leases(system, session["id"]) == 0
        assert (await system.client.delete(f"/v1/sessions/{session['id']}")).status_code == 200
    finally:
        await stop_system(system)


async def _stored(system: System, session_id: str, count: int) -> bool:
    listed = (await system.client.get("/v1/sessions")).json()["sessions"]  # lists show the heartbeat's count
    return any(s["id"] == session_id and s["active_connection_leases"] == count for s in listed)


async def test_a_session_dying_under_a_stream_ends_it_cleanly(sqlite_system: System) -> None:
    system = sqlite_system
    session = await new_session(system)
    async with websocket(system, session["id"], "exec") as ws:
        await receive(ws)
        await send(ws, t="exec", cmd="echo up; sleep 600")
        await receive_until(ws, "out")
        # Kill its init, as a crash would (python-lxc's stop() would wait
        # holding the GIL for the agent in this process to reap: deadlock).
        os.kill(lxc.Container(session["id"], str(system.lxc_path)).init_pid, signal.SIGKILL)
        frames: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed):
            while True:
                frames.append(await receive(ws))
        assert frames and frames[-1]["t"] in ("exit", "error")
    await wait_until(lambda: _status(system, session["id"], "terminated"))
    assert await leases(system, session["id"]) == 0


async def _status(system: System, session_id: str, status: str) -> bool:
    return bool((await system.client.get(f"/v1/sessions/{session_id}")).json()["status"] == status)


async def test_lifetime_expiry_extension_and_idle(system: System) -> None:
    short = await new_session(system, timeout_ms=1500)
    assert short["timeout_ms"] == 1500 and short["expires_at"] is not None
    extended = await new_session(system, timeout_ms=1500)
    patched = await system.client.patch(f"/v1/sessions/{extended['id']}", json={"timeout_ms": 600_000})
    assert patched.status_code == 200, patched.text
    assert patched.json()["timeout_ms"] == 600_000 and patched.json()["expires_at"] > extended["expires_at"]
    await wait_until(lambda: _status(system, short["id"], "terminated"))
    ended = (await system.client.get(f"/v1/sessions/{short['id']}")).json()
    assert ended["status_reason"] == "reached its maximum lifetime of 1.5s (timeout_ms)"
    assert (await system.client.get(f"/v1/sessions/{extended['id']}")).json()["status"] == "running"

    idle = await new_session(system)
    async with websocket(system, idle["id"], "pty") as ws:
        await receive(ws)
        await send(ws, t="open", ch=1, cmd="sleep 600")
        await receive(ws)
        # Shortened once connected, so a slow host cannot idle it out before the lease exists.
        short_idle = await system.client.patch(f"/v1/sessions/{idle['id']}", json={"idle_timeout_ms": 1000})
        assert short_idle.json()["idle_timeout_ms"] == 1000
        await trio.sleep(2.5)  # well past the idle timeout, but connected
        assert (await system.client.get(f"/v1/sessions/{idle['id']}")).json()["status"] == "running"
    await wait_until(lambda: _status(system, idle["id"], "terminated"))
    reason = (await system.client.get(f"/v1/sessions/{idle['id']}")).json()["status_reason"]
    assert reason == "idle for 1s with no connection (idle_timeout_ms)"

    for body in ({"timeout_ms": 10**12}, {}, {"timeout_ms": "1"}, {"nope": 1}):
        bad = await system.client.patch(f"/v1/sessions/{extended['id']}", json=body)
        assert bad.status_code == 422, (body, bad.text)
    too_long = await system.client.post("/v1/sessions", json={"ephemeral": True, "timeout_ms": 10**12})
    assert too_long.status_code == 422
    gone = await system.client.patch(f"/v1/sessions/{short['id']}", json={"timeout_ms": 1000})
    assert gone.status_code == 409
    await system.client.delete(f"/v1/sessions/{extended['id']}")
