"""Terminals of sandboxes and the WebSocket connections attached to them.

A ``Terminal`` is a process on a PTY inside a sandbox, with a bounded
scrollback. It belongs to the ``PtyHub``, not to a connection: it runs
until its process exits (or its sandbox goes), so a client can detach and
reattach later by terminal id and is replayed the scrollback first. One
task per terminal reads its output and hands it to every attached client.

Each client connection (``serve_pty``) runs the ``PtyMux`` protocol core
and has a bounded outbox. A client that stops reading fills its outbox;
the terminal then waits for it (the program in the sandbox is slowed, as a
terminal with scroll lock would), but only for ``slow_client_timeout``:
after that the client is disconnected and the terminal goes on for the
others. Nothing grows without bound.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from dataclasses import dataclass, field

import trio

from agent.endpoints import pty_mux
from agent.endpoints.asgi import WebSocket
from agent.endpoints.failures import api_error
from agent.endpoints.pty_mux import PtyMux, Scrollback
from agent.runtimes.base import PtyProcess, PtySpec, RuntimeFailure
from agent.sandboxes.lease_keeper import LeaseKeeper
from agent.sandboxes.leases import Lease
from agent.sandboxes.manager import SandboxManager
from chaser.wire import errors, frames

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 16
# A terminal hands out at most a page (4095 bytes) per read. When a read
# comes back that full, more is usually waiting: gather it, briefly, so a
# flood of output travels in few large frames while a keystroke's echo
# still goes out at once.
_FULL_READ = 4000
_GATHER_WAIT = 0.002
_OUTBOX_FRAMES = 16
_REAP_DEADLINE = 5.0

CLOSE_NORMAL = 1000
CLOSE_ENDED = 4000  # the server ended the connection (lease expiry, terminate)
CLOSE_TOO_SLOW = 4008


@dataclass(eq=False)
class Terminal:
    id: str
    sandbox_id: str
    process: PtyProcess
    cols: int
    rows: int
    scrollback: Scrollback
    clients: set[PtyClient] = field(default_factory=set)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "cols": self.cols, "rows": self.rows, "attached": len(self.clients)}

    def attach(self, client: PtyClient) -> None:
        self.clients.add(client)
        client.terminals.add(self)

    def detach(self, client: PtyClient) -> None:
        self.clients.discard(client)
        client.terminals.discard(self)


class PtyClient:
    """One WebSocket connection, as the terminals see it."""

    def __init__(self, ws: WebSocket, keeper: LeaseKeeper, lease: Lease, mux: PtyMux, slow_timeout: float) -> None:
        self.ws = ws
        self.keeper = keeper
        self.lease = lease
        self.mux = mux
        self.slow_timeout = slow_timeout
        self.outbox_send, self.outbox_receive = trio.open_memory_channel[bytes](_OUTBOX_FRAMES)
        # Held while frames of one event go into the outbox, so that an
        # attach's "opened" and replay are not interleaved with live output.
        self.lock = trio.Lock()
        self.scope = trio.CancelScope()
        self.dropped_because: str | None = None
        self.terminals: set[Terminal] = set()

    async def put(self, frame_list: list[bytes]) -> None:
        for frame in frame_list:
            with trio.move_on_after(self.slow_timeout):
                await self.outbox_send.send(frame)
                continue
            self.drop(f"client did not read its output for {self.slow_timeout:g}s")
            return

    def drop(self, reason: str) -> None:
        """Disconnect this client; the terminals stop waiting for it at once."""
        self.dropped_because = self.dropped_because or reason
        self.detach_all()
        self.keeper.release(self.lease, reason)
        self.scope.cancel()

    def detach_all(self) -> None:
        for terminal in list(self.terminals):
            terminal.detach(self)

    async def output(self, terminal: Terminal, data: bytes) -> None:
        async with self.lock:
            await self.put(self.mux.output(terminal.id, data))
        self.keeper.active(self.lease)

    async def exited(self, terminal: Terminal, code: int) -> None:
        async with self.lock:
            frame = self.mux.exited(terminal.id, code)
            await self.put([frame] if frame else [])


class PtyHub:
    """Every terminal on this host, by id; owns the tasks that read them."""

    def __init__(self, manager: SandboxManager, *, scrollback: int, max_per_sandbox: int) -> None:
        self.manager = manager
        self.scrollback = scrollback
        self.max_per_sandbox = max_per_sandbox
        self._terminals: dict[str, Terminal] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def of(self, sandbox_id: str) -> list[Terminal]:
        return [t for t in self._terminals.values() if t.sandbox_id == sandbox_id]

    def find(self, terminal_id: str) -> Terminal | None:
        return self._terminals.get(terminal_id)

    def get(self, sandbox_id: str, terminal_id: str) -> Terminal:
        terminal = self._terminals.get(terminal_id)
        if terminal is None or terminal.sandbox_id != sandbox_id:
            raise errors.NotFound(f"terminal {terminal_id} not found", code="pty_not_found")
        return terminal

    async def open(self, sandbox_id: str, action: pty_mux.OpenPty) -> Terminal:
        assert self._nursery is not None, "PtyHub.run has not started"
        if len(self.of(sandbox_id)) >= self.max_per_sandbox:
            raise errors.Conflict(f"at most {self.max_per_sandbox} terminals per session", code="too_many_terminals")
        env, cwd = self.manager.running(sandbox_id).process_defaults(action.env, action.cwd)
        spec = PtySpec(
            argv=action.argv,
            env=env,
            cwd=cwd,
            cols=action.cols,
            rows=action.rows,
        )
        try:
            process = await self.manager.runtime.spawn_pty(sandbox_id, spec)
        except RuntimeFailure as exc:
            raise api_error(exc, sandbox_id) from None
        terminal = Terminal(
            id=secrets.token_hex(8),
            sandbox_id=sandbox_id,
            process=process,
            cols=action.cols,
            rows=action.rows,
            scrollback=Scrollback(self.scrollback),
        )
        self._terminals[terminal.id] = terminal
        self._nursery.start_soon(self._pump, terminal)
        return terminal

    async def _pump(self, terminal: Terminal) -> None:
        """Read the terminal until its process is gone; hand everything to its clients."""
        code: int | None = None
        try:
            while data := await _gather(terminal.process.terminal):
                terminal.scrollback.append(data)
                for client in list(terminal.clients):
                    await client.output(terminal, data)
            code = await terminal.process.wait()
        finally:
            self._terminals.pop(terminal.id, None)
            with trio.CancelScope(shield=True):
                if code is None:
                    terminal.process.kill()
                    with trio.move_on_after(_REAP_DEADLINE):
                        code = await terminal.process.wait()
                await terminal.process.aclose()
                for client in list(terminal.clients):
                    with trio.move_on_after(1):
                        await client.exited(terminal, code if code is not None else 137)
                    terminal.detach(client)
        log.info("terminal %s exited with %s", terminal.id, code, extra={"session_id": terminal.sandbox_id})

    def close_sandbox(self, sandbox_id: str) -> None:
        """Kill the sandbox's terminals (their pumps then clean up)."""
        for terminal in self.of(sandbox_id):
            terminal.process.kill()


async def _read(terminal: trio.abc.ReceiveStream, size: int) -> bytes:
    try:
        return bytes(await terminal.receive_some(size))
    except trio.BrokenResourceError:
        return b""  # EIO: the last process holding the terminal closed it


async def _gather(terminal: trio.abc.ReceiveStream) -> bytes:
    """The terminal's next output, up to ``_READ_SIZE``; b"" once it is closed."""
    data = await _read(terminal, _READ_SIZE)
    chunk = data
    while len(chunk) >= _FULL_READ and len(data) < _READ_SIZE:
        with trio.move_on_after(_GATHER_WAIT):
            chunk = await _read(terminal, _READ_SIZE - len(data))
            data += chunk
            continue
        break
    return data


async def serve_pty(
    ws: WebSocket,
    sandbox_id: str,
    hub: PtyHub,
    keeper: LeaseKeeper,
    *,
    max_channels: int,
    slow_timeout: float,
) -> None:
    async with keeper.hold(sandbox_id, "pty") as lease:
        client = PtyClient(ws, keeper, lease, PtyMux(max_channels), slow_timeout)
        try:
            with client.scope:
                await _serve(client, sandbox_id, hub)
        finally:
            client.detach_all()
    reason = lease.ended_because or client.dropped_because
    if reason is not None:
        code = CLOSE_TOO_SLOW if client.dropped_because and not lease.ended_because else CLOSE_ENDED
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await ws.send(frames.error("stream_ended", reason))
            await ws.close(code, reason)


async def _serve(client: PtyClient, sandbox_id: str, hub: PtyHub) -> None:
    ws = client.ws

    async def write_out() -> None:
        async for frame in client.outbox_receive:
            await ws.send(frame)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_out)
        await client.put([frames.hello(client.keeper.table.keepalive_timeout / 3)])
        while (data := await ws.receive()) is not None:
            client.keeper.seen(client.lease)
            for action in client.mux.receive(data):
                await _act(client, sandbox_id, hub, action)
        nursery.cancel_scope.cancel()


async def _act(client: PtyClient, sandbox_id: str, hub: PtyHub, action: pty_mux.Action) -> None:
    if isinstance(action, pty_mux.Send):
        async with client.lock:
            await client.put([action.frame])
        return
    if isinstance(action, pty_mux.OpenPty | pty_mux.AttachPty):
        try:
            if isinstance(action, pty_mux.OpenPty):
                terminal = await hub.open(sandbox_id, action)
            else:
                terminal = hub.get(sandbox_id, action.pty)
        except errors.ApiError as exc:
            async with client.lock:
                await client.put([client.mux.open_failed(action.ch, exc.code, exc.message)])
            return
        async with client.lock:
            # Snapshot and subscribe at once: output either is in the replay
            # or reaches this client live, never both, never neither.
            replay = terminal.scrollback.snapshot()
            terminal.attach(client)
            await client.put([client.mux.opened(action.ch, terminal.id, terminal.cols, terminal.rows)])
            await client.put(client.mux.output(terminal.id, replay))
        client.keeper.active(client.lease)
        return
    found = hub.find(action.pty)
    if found is None:
        return  # it just exited; its exit frame is on its way
    terminal = found
    client.keeper.active(client.lease)
    if isinstance(action, pty_mux.WriteInput):
        # A program that reads no input fills the terminal's input queue;
        # then input is dropped, as a full terminal would, rather than
        # blocking this client's signals and pings behind it.
        # (A closing terminal refuses input; its exit frame is on its way.)
        closing = (trio.BrokenResourceError, trio.ClosedResourceError)
        with trio.move_on_after(client.slow_timeout), contextlib.suppress(*closing):
            await terminal.process.terminal.send_all(action.data)
    elif isinstance(action, pty_mux.ResizePty):
        terminal.cols, terminal.rows = action.cols, action.rows
        terminal.process.resize(action.cols, action.rows)
    elif isinstance(action, pty_mux.SignalPty):
        terminal.process.signal(action.sig)
    elif isinstance(action, pty_mux.DetachPty):
        terminal.detach(client)
    elif isinstance(action, pty_mux.ClosePty):
        terminal.process.kill()
