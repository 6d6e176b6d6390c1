"""Streaming exec and PTYs through the session endpoints, from outside clients."""

from __future__ import annotations

import hashlib
import json

import trio
from websockets.sync.client import connect

from tests.conftest import System
from tests.endpoints import new_session, receive, receive_until, run, send, websocket, ws_url

BIG = 100_000_000


async def test_exec_stream_separates_stdout_stderr_and_takes_stdin(sandbox_system: System) -> None:
    system = sandbox_system
    session = await new_session(system)
    async with websocket(system, session["id"], "exec") as ws:
        assert (await receive(ws))["t"] == "hello"
        await send(ws, t="exec", cmd="tr a-z A-Z; echo oops >&2; exit 3", stdin=True)
        assert (await receive(ws))["t"] == "started"
        await send(ws, t="in", d=b"hello ")
        await send(ws, t="in", d=b"world\n")
        await send(ws, t="eof")
        frames = await receive_until(ws, "exit")
    out = b"".join(f["d"] for f in frames if f["t"] == "out")
    err = b"".join(f["d"] for f in frames if f["t"] == "err")
    assert (out, err) == (b"HELLO WORLD\n", b"oops\n")
    assert frames[-1] == {"t": "exit", "code": 3, "timed_out": False}
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_exec_stream_signal_and_timeout(sandbox_system: System) -> None:
    system = sandbox_system
    session = await new_session(system)
    async with websocket(system, session["id"], "exec") as ws:
        await receive(ws)
        await send(ws, t="exec", cmd=["sh", "-c", "echo ready; sleep 100"])
        await receive_until(ws, "out")
        await send(ws, t="signal", sig="TERM")
        frames = await receive_until(ws, "exit")
        assert frames[-1]["code"] == 128 + 15
    async with websocket(system, session["id"], "exec") as ws:
        await receive(ws)
        await send(ws, t="exec", cmd="sleep 100", timeout_ms=300)
        frames = await receive_until(ws, "exit")
        assert frames[-1] == {"t": "exit", "code": 137, "timed_out": True}
    ps = await run(system, session["id"], "ps -eo args=")
    assert "sleep 100" not in ps["output"]
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_100_mb_arrive_whole_and_in_order_through_exec_and_pty(sqlite_system: System) -> None:
    """A command that writes 100 MB and exits at once loses nothing, in either stream."""
    system = sqlite_system
    session = await new_session(system)
    made = await run(system, session["id"], f"head -c {BIG} /dev/urandom > /tmp/big && sha256sum /tmp/big")
    expected = made["output"].split()[0]
    for _ in range(3):
        digest, size = hashlib.sha256(), 0
        async with websocket(system, session["id"], "exec") as ws:
            await receive(ws)
            await send(ws, t="exec", cmd=["cat", "/tmp/big"])
            while (frame := await receive(ws))["t"] != "exit":
                if frame["t"] == "out":
                    digest.update(frame["d"])
                    size += len(frame["d"])
            assert frame["code"] == 0
        assert (size, digest.hexdigest()) == (BIG, expected)

        digest, size = hashlib.sha256(), 0
        async with websocket(system, session["id"], "pty") as ws:
            await receive(ws)
            # Raw mode: the terminal passes the bytes through untranslated.
            await send(ws, t="open", ch=1, cmd="stty raw -echo && cat /tmp/big")
            while (frame := await receive(ws))["t"] != "exit":
                if frame["t"] == "out":
                    digest.update(frame["d"])
                    size += len(frame["d"])
            assert frame["code"] == 0
        assert (size, digest.hexdigest()) == (BIG, expected)
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_pty_shell_resize_signal_exit(sandbox_system: System) -> None:
    system = sandbox_system
    session = await new_session(system)
    async with websocket(system, session["id"], "pty") as ws:
        assert (await receive(ws))["t"] == "hello"
        await send(ws, t="open", ch=7, cols=100, rows=30, env={"PS1": "$ "})
        opened = await receive(ws)
        assert opened["t"] == "opened" and opened["ch"] == 7 and (opened["cols"], opened["rows"]) == (100, 30)

        async def read_until(marker: bytes) -> bytes:
            seen = b""
            while marker not in seen:
                frame = await receive(ws)
                assert frame["t"] == "out" and frame["ch"] == 7, frame
                seen += frame["d"]
            return seen

        await send(ws, t="in", ch=7, d=b"tty; stty size; echo MARK-$((6*7))\r")
        seen = await read_until(b"MARK-42")
        assert b"/dev/pts/" in seen and b"30 100" in seen
        await send(ws, t="resize", ch=7, cols=120, rows=40)
        await send(ws, t="in", ch=7, d=b"stty size; echo MARK2-$((1+1))\r")
        assert b"40 120" in await read_until(b"MARK2-2")
        await send(ws, t="in", ch=7, d=b"sleep 100\r")
        await trio.sleep(0.3)
        await send(ws, t="signal", ch=7, sig="INT")
        await send(ws, t="in", ch=7, d=b"echo after-$((2+2))\r")
        await read_until(b"after-4")
        await send(ws, t="in", ch=7, d=b"exit 5\r")
        frames = await receive_until(ws, "exit")
        assert frames[-1] == {"t": "exit", "code": 5, "ch": 7}
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_pty_shared_by_two_clients_and_replayed_on_reattach(sqlite_system: System) -> None:
    system = sqlite_system
    session = await new_session(system)
    async with websocket(system, session["id"], "pty") as first:
        await receive(first)
        await send(first, t="open", ch=1, cmd="cat")
        terminal = (await receive(first))["pty"]
        await send(first, t="in", ch=1, d=b"before\r")
        seen = b""
        while b"before\r\nbefore" not in seen:  # echo, then cat's copy
            seen += (await receive(first))["d"]
        # A second client, with the third-party websockets library, attaches and is replayed the scrollback.
        url = ws_url(system, session["id"], "pty")
        headers = {"Authorization": f"Bearer {system.api_key}"}

        def second_client() -> bytes:
            import msgpack

            with connect(url, additional_headers=headers) as ws:
                assert msgpack.unpackb(ws.recv(timeout=10))["t"] == "hello"
                ws.send(msgpack.packb({"t": "attach", "ch": 3, "pty": terminal}))
                opened = msgpack.unpackb(ws.recv(timeout=10))
                assert opened["t"] == "opened" and opened["pty"] == terminal
                got = b""
                while b"after" not in got:
                    frame = msgpack.unpackb(ws.recv(timeout=10))
                    assert frame["ch"] == 3
                    got += frame["d"]
                return got

        async with trio.open_nursery() as nursery:
            result: list[bytes] = []

            async def attach() -> None:
                result.append(await trio.to_thread.run_sync(second_client))

            nursery.start_soon(attach)
            await trio.sleep(1)
            await send(first, t="in", ch=1, d=b"after\r")
        assert result[0].startswith(b"before\r\nbefore") and b"after" in result[0]
        # Both saw the new output.
        seen = b""
        while b"after\r\nafter" not in seen:
            seen += (await receive(first))["d"]
        await send(first, t="detach", ch=1)
    # Detached, the terminal lives on: it is listed, and a new client attaches.
    listed = (await system.client.get(f"/s/{session['id']}/pty")).json()
    assert [t["id"] for t in listed["terminals"]] == [terminal]
    async with websocket(system, session["id"], "pty") as again:
        await receive(again)
        await send(again, t="attach", ch=1, pty=terminal)
        assert (await receive(again))["t"] == "opened"
        replay = (await receive(again))["d"]
        assert b"before" in replay and b"after" in replay
        await send(again, t="close", ch=1)
        assert (await receive_until(again, "exit"))[-1]["t"] == "exit"
    info = (await system.client.get(f"/s/{session['id']}/")).json()
    assert info["terminals"] == [] and info["id"] == session["id"]
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_bad_frames_get_clear_errors(sqlite_system: System) -> None:
    system = sqlite_system
    session = await new_session(system)
    async with websocket(system, session["id"], "pty") as ws:
        await receive(ws)
        await ws.send_message(b"\xc1 not msgpack")
        assert (await receive(ws))["code"] == "invalid_frame"
        await send(ws, t="in", ch=4, d=b"x")
        assert (await receive(ws)) == {
            "t": "error", "code": "unknown_channel", "message": "channel 4 has no terminal", "ch": 4,
        }  # fmt: skip
        await send(ws, t="attach", ch=1, pty="nope")
        assert (await receive(ws))["code"] == "pty_not_found"
        await send(ws, t="open", ch=2, cmd=["/no/such/program"])
        assert (await receive(ws))["t"] == "opened"
        frames = await receive_until(ws, "exit")
        assert b"cannot run" in b"".join(f.get("d", b"") for f in frames) and frames[-1]["code"] == 127
    async with websocket(system, session["id"], "pty") as ws:
        await receive(ws)
        await ws.send_message(b"\x00" * (3 << 20))  # over the agent's message limit
        with trio.fail_after(10):
            while True:
                try:
                    await ws.get_message()
                except Exception as exc:  # the server closed: 1009, message too big
                    assert getattr(exc, "reason", None) is not None
                    assert exc.reason.code == 1009  # type: ignore[attr-defined]
                    break
    body = json.loads((await system.client.get(f"/s/{session['id']}/nope")).text)
    assert body["error"]["code"] == "not_found"
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_pty_exit_comes_while_a_background_process_holds_the_terminal(sandbox_system: System) -> None:
    """The shell exits, a process it left behind keeps the terminal open: the exit still arrives."""
    system = sandbox_system
    session = await new_session(system)
    async with websocket(system, session["id"], "pty") as ws:
        await receive(ws)
        await send(ws, t="open", ch=1, cmd="sleep 60 & echo started; exit 3")
        frames = await receive_until(ws, "exit", timeout=20)
    assert b"started" in b"".join(f.get("d", b"") for f in frames)
    assert frames[-1]["t"] == "exit" and frames[-1]["code"] == 3, frames[-1]
    await system.client.delete(f"/v1/sessions/{session['id']}", params={"force": "true"})
