"""Streaming exec: one process per WebSocket, its stdout and stderr as they come.

The client's first frame says what to run (``exec``); then its ``in``
frames feed stdin (``eof`` closes it), ``signal`` frames signal the
process group, ``ping`` keeps the lease. The agent answers ``started``,
then ``out``/``err`` frames in the order each stream produced them, and
finally ``exit``; then it closes. The process is tied to the connection:
a client that leaves, or whose lease ends, takes the process with it.
Output goes through the same ``run_process`` as the one-shot exec.
"""

from __future__ import annotations

import trio

from agent.endpoints.asgi import WebSocket
from agent.endpoints.failures import api_error
from agent.runtimes.base import ProcessSpec, RuntimeFailure
from agent.runtimes.execution import run_process
from agent.sandboxes.lease_keeper import LeaseKeeper
from agent.sandboxes.leases import Lease
from agent.sandboxes.manager import SandboxManager
from chaser.wire import errors, frames
from chaser.wire.frames import FrameError

# How long a client may take to say what to run.
_FIRST_FRAME_TIMEOUT = 30.0
# stdin chunks waiting for the process to read them, per stream.
_STDIN_BACKLOG = 16

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_ENDED = 4000  # the server ended the stream (lease expiry, terminate)


async def serve_exec(ws: WebSocket, sandbox_id: str, manager: SandboxManager, keeper: LeaseKeeper) -> None:
    async with keeper.hold(sandbox_id, "exec") as lease:
        try:
            await _serve(ws, sandbox_id, manager, keeper, lease)
        except FrameError as exc:
            await ws.send(frames.error(exc.code, exc.message))
            await ws.close(CLOSE_POLICY, exc.message)
        except errors.ApiError as exc:
            await ws.send(frames.error(exc.code, exc.message))
            await ws.close(CLOSE_NORMAL, exc.message)
    if lease.ended_because is not None:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await ws.send(frames.error("stream_ended", lease.ended_because))
            await ws.close(CLOSE_ENDED, lease.ended_because)


async def _serve(ws: WebSocket, sandbox_id: str, manager: SandboxManager, keeper: LeaseKeeper, lease: Lease) -> None:
    await ws.send(frames.hello(keeper.table.keepalive_timeout / 3))
    with trio.fail_after(_FIRST_FRAME_TIMEOUT):
        while True:
            data = await ws.receive()
            if data is None:
                return
            keeper.seen(lease)
            first = frames.decode_exec(data)
            if isinstance(first, frames.Ping):
                await ws.send(frames.pong())
                continue
            if not isinstance(first, frames.Exec):
                raise FrameError("invalid_frame", f"the first frame must be exec, not {first.t}")
            break
    argv = ["/bin/sh", "-c", first.cmd] if isinstance(first.cmd, str) else list(first.cmd)
    env, cwd = manager.running(sandbox_id).process_defaults(first.env, first.cwd)
    spec = ProcessSpec(argv=argv, env=env, cwd=cwd, merge_stderr=False, stdin=first.stdin)
    try:
        process = await manager.runtime.spawn(sandbox_id, spec)
    except RuntimeFailure as exc:
        raise api_error(exc, sandbox_id) from None
    await ws.send(frames.started())
    stdin_send, stdin_receive = trio.open_memory_channel[bytes | None](_STDIN_BACKLOG)
    timeout = first.timeout_ms / 1000 if first.timeout_ms else None

    async def forward(stream: str, chunk: bytes) -> None:
        keeper.active(lease)
        step = frames.MAX_DATA_CHUNK
        for i in range(0, len(chunk), step):
            await ws.send(frames.output(chunk[i : i + step], stream="out" if stream == "stdout" else "err"))

    async def feed_stdin() -> None:
        stream = process.stdin
        async with stdin_receive:
            async for chunk in stdin_receive:
                if stream is None:
                    continue
                if chunk is None:
                    await stream.aclose()
                    stream = None
                    continue
                try:
                    await stream.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    stream = None  # the process closed its stdin; drop the rest

    async def listen(cancel: trio.CancelScope) -> None:
        async with stdin_send:
            while (data := await ws.receive()) is not None:
                keeper.seen(lease)
                try:
                    frame = frames.decode_exec(data)
                    if isinstance(frame, frames.Ping):
                        await ws.send(frames.pong())
                    elif isinstance(frame, frames.Input):
                        keeper.active(lease)
                        await stdin_send.send(frame.d)
                    elif isinstance(frame, frames.Eof):
                        await stdin_send.send(None)
                    elif isinstance(frame, frames.Signal):
                        keeper.active(lease)
                        process.kill(frames.signal_number(frame.sig))
                    else:
                        raise FrameError("invalid_frame", "exec was already given")
                except FrameError as exc:
                    await ws.send(frames.error(exc.code, exc.message))
        cancel.cancel()  # the client left: the process goes with it

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen, nursery.cancel_scope)
        nursery.start_soon(feed_stdin)
        outcome = await run_process(process, timeout, forward)
        await ws.send(frames.exited(outcome.exit_code, timed_out=outcome.timed_out))
        await ws.close(CLOSE_NORMAL)
        nursery.cancel_scope.cancel()
