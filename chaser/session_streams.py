"""Clients of a session's WebSocket endpoints: a terminal, a streaming exec, a TCP tunnel.

What ``chaser shell``, ``chaser exec SESSION -- cmd`` and ``chaser
port-forward`` run (imported only by them: the CLI starts fast). Frames are
``chaser.wire.frames``' msgpack maps; each client pings at the interval the
server's ``hello`` asks for, so its lease stays alive while it waits.

Local output is written by a worker thread with blocking writes: that
works for a terminal, a pipe or a regular file alike (an event loop cannot
poll a regular file) and never leaves the shell's descriptors non-blocking.
A slow reader of our output slows the stream down to the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from chaser._files_client import endpoint
from chaser.wire import errors, frames

# Server frames carry at most 512 KiB of data; PTY output is gathered up to a few of those.
_MAX_MESSAGE = 16 << 20
# What one socket read may take: trio-websocket's default (4 KiB) makes a
# large frame cost a hundred reads and parser passes.
RECEIVE_BUFFER = 1 << 20
_READ_SIZE = 1 << 16
# The tunnel has no hello; it must hear from us within the agent's keepalive timeout (60 s).
_TUNNEL_PING = 20.0
# Signals ``chaser exec`` passes on to the command instead of dying of them.
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StreamError(Exception):
    """The stream ended without the command's exit status; the message says why."""


def websocket_url(api_url: str, session_id: str, rest: str) -> str:
    scheme, _, tail = api_url.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{tail}{endpoint(session_id, rest)}"


@contextlib.asynccontextmanager
async def _connect(url: str, headers: Mapping[str, str]) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket to ``url``; a refused handshake raises the API's error (404, 409, 502, ...)."""
    try:
        extra = [(k.encode(), v.encode()) for k, v in headers.items()]
        connection = open_websocket_url(
            url, extra_headers=extra, max_message_size=_MAX_MESSAGE, receive_buffer_size=RECEIVE_BUFFER
        )
        async with connection as ws:
            yield ws
    except ConnectionRejected as exc:
        try:
            body = json.loads(exc.body or b"")
        except ValueError:
            body = None
        raise errors.from_response(exc.status_code, body) from None


async def _write(fd: int, data: bytes) -> None:
    def write_all() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    await trio.to_thread.run_sync(write_all)


async def _read(fd: int) -> bytes:
    """The next chunk from ``fd``; b"" at its end. The thread is left behind if cancelled."""
    return await trio.to_thread.run_sync(os.read, fd, _READ_SIZE, abandon_on_cancel=True)


async def _receive(ws: WebSocketConnection) -> dict[str, Any]:
    data = await ws.get_message()
    if isinstance(data, str):
        raise StreamError(f"unexpected text message from the server: {data[:200]!r}")
    return frames.decode_any(data)


async def _hello(ws: WebSocketConnection) -> float:
    hello = await _receive(ws)
    if hello.get("t") != "hello":
        raise StreamError(f"expected hello, got {hello}")
    return float(hello["keepalive"])


async def _ping_every(ws: WebSocketConnection, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        await ws.send_message(frames.encode({"t": "ping"}))


def _closed(exc: ConnectionClosed) -> StreamError:
    reason = exc.reason
    if reason is None:
        return StreamError("connection closed")
    return StreamError(f"connection closed ({reason.code}{': ' + reason.reason if reason.reason else ''})")


# -- exec -------------------------------------------------------------------


async def run_exec(
    api_url: str,
    headers: Mapping[str, str],
    session_id: str,
    command: str | list[str],
    *,
    stdin: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout_ms: int | None = None,
) -> int:
    """Run ``command``, its stdout and stderr to ours as they come; its exit code.

    With ``stdin``, our standard input is streamed to it. SIGINT, SIGTERM
    and SIGHUP are passed on to it rather than ending us.
    """
    url = websocket_url(api_url, session_id, "exec")
    request: dict[str, Any] = {"t": "exec", "cmd": command, "env": dict(env or {}), "stdin": stdin}
    if cwd is not None:
        request["cwd"] = cwd
    if timeout_ms is not None:
        request["timeout_ms"] = timeout_ms
    async with _connect(url, headers) as ws:
        try:
            keepalive = await _hello(ws)
            await ws.send_message(frames.encode(request))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_ping_every, ws, keepalive)
                nursery.start_soon(_forward_signals, ws)
                if stdin:
                    nursery.start_soon(_feed_stdin, ws)
                code = await _exec_output(ws)
                nursery.cancel_scope.cancel()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
    return code


async def _exec_output(ws: WebSocketConnection) -> int:
    while True:
        frame = await _receive(ws)
        kind = frame["t"]
        if kind == "out":
            await _write(sys.stdout.fileno(), frame["d"])
        elif kind == "err":
            await _write(sys.stderr.fileno(), frame["d"])
        elif kind == "exit":
            if frame.get("timed_out"):
                print("chaser: command timed out", file=sys.stderr)
            return int(frame["code"])
        elif kind == "error":
            raise StreamError(f"{frame['code']}: {frame['message']}")


async def _feed_stdin(ws: WebSocketConnection) -> None:
    while chunk := await _read(sys.stdin.fileno()):
        await ws.send_message(frames.encode({"t": "in", "d": chunk}))
    await ws.send_message(frames.encode({"t": "eof"}))


async def _forward_signals(ws: WebSocketConnection) -> None:
    with trio.open_signal_receiver(*_FORWARDED) as received:
        async for signum in received:
            await ws.send_message(frames.encode({"t": "signal", "sig": int(signum)}))


# -- shell ------------------------------------------------------------------


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[bool]:
    """Put the terminal on ``fd`` in raw mode (keys go to the remote side as typed); restore after."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _terminal_size() -> tuple[int, int]:
    for fd in (sys.stdin.fileno(), sys.stdout.fileno()):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return size.columns, size.lines
    return 80, 24


async def run_shell(
    api_url: str, headers: Mapping[str, str], session_id: str, command: str | list[str] | None = None
) -> int:
    """An interactive terminal in the session (its login shell, or ``command``); the exit code."""
    url = websocket_url(api_url, session_id, "pty")
    cols, rows = _terminal_size()
    request: dict[str, Any] = {
        "t": "open",
        "ch": 1,
        "cols": cols,
        "rows": rows,
        "env": {"TERM": os.environ.get("TERM", "xterm-256color")},
    }
    if command is not None:
        request["cmd"] = command
    async with _connect(url, headers) as ws:
        try:
            keepalive = await _hello(ws)
            await ws.send_message(frames.encode(request))
            with _raw_terminal(sys.stdin.fileno()):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_ping_every, ws, keepalive)
                    nursery.start_soon(_keys, ws)
                    nursery.start_soon(_resizes, ws)
                    code = await _terminal_output(ws)
                    nursery.cancel_scope.cancel()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
    return code


async def _terminal_output(ws: WebSocketConnection) -> int:
    while True:
        frame = await _receive(ws)
        kind = frame["t"]
        if kind == "out":
            await _write(sys.stdout.fileno(), frame["d"])
        elif kind == "exit":
            return int(frame["code"])
        elif kind == "error":
            raise StreamError(f"{frame['code']}: {frame['message']}")


async def _keys(ws: WebSocketConnection) -> None:
    while chunk := await _read(sys.stdin.fileno()):
        await ws.send_message(frames.encode({"t": "in", "ch": 1, "d": chunk}))


async def _resizes(ws: WebSocketConnection) -> None:
    with trio.open_signal_receiver(signal.SIGWINCH) as received:
        async for _ in received:
            cols, rows = _terminal_size()
            await ws.send_message(frames.encode({"t": "resize", "ch": 1, "cols": cols, "rows": rows}))


# -- port forwarding ----------------------------------------------------------


async def forward_port(
    api_url: str,
    headers: Mapping[str, str],
    session_id: str,
    port: int,
    local_port: int,
    *,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:local_port``; each connection is tunnelled to ``port`` in the session.

    Reports the port listened on (``local_port`` 0 picks one). Runs until cancelled.
    """
    url = websocket_url(api_url, session_id, f"tunnel/{port}")
    listeners = await trio.open_tcp_listeners(local_port, host=host)
    bound = listeners[0].socket.getsockname()[1]

    async def tunnel(local: trio.SocketStream) -> None:
        async with local:
            try:
                async with _connect(url, headers) as ws:
                    await _splice(local, ws)
            except errors.ApiError as exc:  # 502: nothing listens on the port, 409: the session ended, ...
                print(f"chaser: tunnel to port {port}: {exc.code}: {exc.message}", file=sys.stderr)
            except (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError) as exc:
                print(f"chaser: tunnel to port {port}: {exc!r}", file=sys.stderr)

    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(tunnel, listeners, handler_nursery=nursery)


async def _splice(local: trio.SocketStream, ws: WebSocketConnection) -> None:
    async with trio.open_nursery() as nursery:

        async def outbound() -> None:
            while data := await local.receive_some(_READ_SIZE):
                await ws.send_message(bytes(data))
            nursery.cancel_scope.cancel()

        async def inbound() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    message = await ws.get_message()
                    if isinstance(message, bytes):
                        await local.send_all(message)
            nursery.cancel_scope.cancel()

        async def keepalive() -> None:
            while True:
                await trio.sleep(_TUNNEL_PING)
                await ws.send_message("ping")

        nursery.start_soon(outbound)
        nursery.start_soon(inbound)
        nursery.start_soon(keepalive)
