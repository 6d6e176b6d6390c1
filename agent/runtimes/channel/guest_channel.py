"""The host end of a VM's guest channel: processes multiplexed over one stream.

``GuestChannel.serve`` owns the connection (QEMU's end of the virtio-serial
port, a unix socket): it says hello, reports itself started once the guest
agent answered (that is *exec-ready*), then reads frames and routes them to
the ``GuestProcess`` they concern until the connection ends. Writes go
through a queue and one writer task, so ``Process.kill`` (synchronous by
contract) can send too. The wire format is ``vmimages.guest.protocol``.

Besides processes, ``request`` sends one message and waits for the guest's
``reply`` with the same id (freezing a filesystem, for instance).

When the connection ends (QEMU died, the VM was paused, the agent shuts
down) every process still open ends with it: its output reads EOF and its
``wait`` answers 128+SIGKILL, as for a process killed; every request
awaiting its reply raises ``SandboxGone``.

The guest is not trusted: whatever runs as root in it can write to the
channel. Every frame is checked (``guest_decoder``, ``guest_frames``, and
here against the channel's state), output is held to its credit window and
what waits for the guest to read it to a bound (``guest_outbox``). A guest
that breaks the protocol, or stops reading, loses its channel as if the
connection had ended, with the reason logged as a warning; ``serve`` never
raises once started, since it runs beside every other sandbox's channel.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import trio

from agent.runtimes.base import Busy, GuestNetwork, Process, ProcessSpec, RuntimeFailure, SandboxGone
from agent.runtimes.channel.guest_decoder import GuestDecoder
from agent.runtimes.channel.guest_frames import (
    Bye,
    Eof,
    Exit,
    GuestFrame,
    Hello,
    InputCredit,
    Output,
    ProtocolViolation,
    Reply,
    Started,
    parse,
)
from agent.runtimes.channel.guest_outbox import Outbox
from vmimages.guest.protocol import MAX_FRAME, WINDOW, Message, encode, encode_sync, flush_padding

log = logging.getLogger(__name__)

# How often an unanswered hello is repeated while the guest boots.
# Processes, connections and requests one sandbox may have open at once (the
# PTY hub allows 32 terminals a sandbox; file streams and execs share the rest).
MAX_OPEN = 256
_HELLO_EVERY = 0.5
# On a reconnection, how long before suspecting half a frame in the guest.
_FLUSH_AFTER = 1.0
# Credit is returned in batches of this many bytes consumed.
_CREDIT_BATCH = WINDOW // 4
# Input is sent in messages of at most this many bytes.
_INPUT_CHUNK = 64 << 10
# What is read from the connection at once.
_READ_SIZE = 1 << 20
# Bytes waiting for the guest to read them: room for a few of the largest
# frames (a flush padding, a request), past which the guest is given up;
# input waits while half of it is taken.
_OUTBOX_LIMIT = 8 * MAX_FRAME


class GuestOutput(trio.abc.ReceiveStream):
    """One output stream (stdout or stderr) of a process in the guest.

    The guest sends at most ``WINDOW`` bytes the host has not credited back
    (credit goes back as what arrived is read), so what waits here is
    bounded, and a guest sending more breaks the protocol. No slack is owed
    for credit on its way: the guest counts only credit it has received, so
    credit in flight makes it send less than the host allows, never more.
    """

    def __init__(self, channel: GuestChannel, process_id: int, fd: int) -> None:
        self._channel = channel
        self._process_id = process_id
        self._fd = fd
        self._chunks: deque[bytes] = deque()
        self._ended = False  # nothing more to read: the guest's eof, a lost channel, or closed here
        self._eof = False
        self._wakeup = trio.Event()
        self._uncredited = 0  # arrived and not credited back: at most WINDOW
        self._unacknowledged = 0  # of which read, credited back in batches

    def feed(self, data: bytes) -> None:
        """What the guest sent; dropped if the reader closed the stream."""
        if self._eof:
            raise ProtocolViolation(f"output on stream {self._fd} of id {self._process_id} after its eof")
        self._uncredited += len(data)
        if self._uncredited > WINDOW:
            raise ProtocolViolation(
                f"{self._uncredited} bytes uncredited on stream {self._fd} of id {self._process_id},"
                f" over its {WINDOW}-byte window"
            )
        if not self._ended:
            self._chunks.append(data)
            self._wakeup.set()

    def end_of_output(self) -> None:
        """The guest's eof: nothing more comes."""
        if self._eof:
            raise ProtocolViolation(f"a second eof on stream {self._fd} of id {self._process_id}")
        self._eof = True
        self.end()

    def end(self) -> None:
        self._ended = True
        self._wakeup.set()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        while not self._chunks and not self._ended:
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        if not self._chunks:
            return b""
        chunk = self._chunks.popleft()
        if max_bytes is not None and len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            self._chunks.appendleft(rest)
        self._unacknowledged += len(chunk)
        if self._unacknowledged >= _CREDIT_BATCH:
            self._channel.send(
                {"type": "credit", "id": self._process_id, "fd": self._fd, "bytes": self._unacknowledged}
            )
            self._uncredited -= self._unacknowledged
            self._unacknowledged = 0
        return chunk

    async def aclose(self) -> None:
        self.end()
        self._chunks.clear()
        await trio.lowlevel.checkpoint()


class GuestInput(trio.abc.SendStream):
    """What the host streams into a child of the guest: stdin, keystrokes, bytes to send.

    At most ``WINDOW`` bytes travel unacknowledged: ``send_all`` waits for
    the guest's ``input_credit`` beyond that, so a process that stops
    reading its input stops its writer here.
    """

    def __init__(self, channel: GuestChannel, process_id: int) -> None:
        self._channel = channel
        self._process_id = process_id
        self._outstanding = 0
        self._credited = trio.Event()
        self._closed = False
        self._lost: str | None = None

    def credit(self, count: int) -> None:
        """The guest's ``input_credit``: never for more than was sent and not yet credited."""
        if count > self._outstanding:
            raise ProtocolViolation(
                f"input_credit of {count} bytes for id {self._process_id}, which has {self._outstanding} outstanding"
            )
        self._outstanding -= count
        self._credited.set()

    def lost(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        self._credited.set()

    async def _room(self) -> int:
        """How much may be sent now: within the window, and once the channel's outbox has room."""
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the input was closed")
            if self._lost is not None:
                raise trio.BrokenResourceError(f"nothing takes the input any more: {self._lost}")
            if self._outstanding >= WINDOW:
                self._credited = trio.Event()
                await self._credited.wait()
            elif not self._channel.outbox.has_bulk_room():
                await self._channel.outbox.wait_bulk_room()
            else:
                return WINDOW - self._outstanding

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        await trio.lowlevel.checkpoint()
        while view:
            count = min(len(view), await self._room(), _INPUT_CHUNK)
            self._channel.send({"type": "input", "id": self._process_id, "data": bytes(view[:count])})
            self._outstanding += count
            view = view[count:]

    async def wait_send_all_might_not_block(self) -> None:
        await self._room()

    async def aclose(self) -> None:
        """End the input (the process reads EOF; a connection is half-closed)."""
        if not self._closed:
            self._closed = True
            self._credited.set()
            self._channel.send({"type": "input_eof", "id": self._process_id})
        await trio.lowlevel.checkpoint()


class GuestProcess(Process):
    """A child of the guest agent: a process, or a connection; its id is the channel's, not a pid."""

    def __init__(self, channel: GuestChannel, process_id: int, merge_stderr: bool, *, stdin: bool = False) -> None:
        self._channel = channel
        self.id = process_id
        self.pid: int | None = None
        self._outputs = {1: GuestOutput(channel, process_id, 1)}
        if not merge_stderr:
            self._outputs[2] = GuestOutput(channel, process_id, 2)
        self.stdout = self._outputs[1]
        self.stderr = self._outputs.get(2)
        self.stdin: GuestInput | None = GuestInput(channel, process_id) if stdin else None
        self._code: int | None = None
        self._lost: str | None = None
        self._exited = trio.Event()

    def output(self, fd: int) -> GuestOutput | None:
        return self._outputs.get(fd)

    def receive(self, frame: Started | Output | Eof | Exit | InputCredit) -> None:
        """Apply a frame about this process; ``ProtocolViolation`` if its state forbids it."""
        match frame:
            case Started(pid=pid):
                if self.pid is not None:
                    raise ProtocolViolation(f"a second started for id {self.id}")
                self.pid = pid
            case Output(fd=fd, data=data):
                self._stream(fd).feed(data)
            case Eof(fd=fd):
                self._stream(fd).end_of_output()
            case Exit(code=code):
                if self._code is not None:
                    raise ProtocolViolation(f"a second exit for id {self.id}")
                self._exited_with(code)
            case InputCredit(count=count):
                if self.stdin is None:
                    raise ProtocolViolation(f"input_credit for id {self.id}, which takes no input")
                self.stdin.credit(count)

    def _stream(self, fd: int) -> GuestOutput:
        stream = self._outputs.get(fd)
        if stream is None:
            raise ProtocolViolation(f"stream {fd} of id {self.id}, which has no such stream")
        return stream

    def _exited_with(self, code: int) -> None:
        self._code = code
        if self.stdin is not None:
            self.stdin.lost("the process exited")
        self._exited.set()

    def lost(self, reason: str) -> None:
        self._lost = reason
        for output in self._outputs.values():
            output.end()
        if self.stdin is not None:
            self.stdin.lost(reason)
        self._exited.set()

    async def wait(self) -> int:
        """The exit code; 128+SIGKILL if the VM went away (paused, died) first: it ended there."""
        await self._exited.wait()
        if self._code is None:
            return 128 + signal.SIGKILL
        return self._code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if not self._exited.is_set():
            self._channel.send({"type": "kill", "id": self.id, "signal": int(sig)})

    def signal_foreground(self, sig: int) -> None:
        """Signal the foreground process group of the process's terminal."""
        if not self._exited.is_set():
            self._channel.send({"type": "kill", "id": self.id, "signal": int(sig), "foreground": True})

    def resize(self, cols: int, rows: int) -> None:
        if not self._exited.is_set():
            self._channel.send({"type": "resize", "id": self.id, "cols": cols, "rows": rows})

    async def aclose(self) -> None:
        self._channel.release(self)
        for output in self._outputs.values():
            await output.aclose()


class _Call:
    """A request waiting for its reply."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: Reply | None = None
        self.lost: str | None = None


class GuestChannel:
    """One connection to a guest agent; see the module docstring."""

    def __init__(self, stream: trio.abc.Stream, name: str) -> None:
        self._stream = stream
        self.name = name
        self.outbox = Outbox(_OUTBOX_LIMIT, _OUTBOX_LIMIT // 2)
        self._processes: dict[int, GuestProcess] = {}
        self._calls: dict[int, _Call] = {}
        self._last_id = 0  # ids are given out in order: a guest naming a later one made it up
        self._closed: str | None = None
        self._bye = trio.Event()
        self._scope: trio.CancelScope | None = None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def serve(
        self,
        session: str,
        *,
        reconnecting: bool,
        network: GuestNetwork | None = None,
        task_status: trio.TaskStatus[GuestChannel] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Handshake, report started (exec-ready), then route frames until the end.

        ``reconnecting``: the guest ran before (agent restart, resume), so it
        may hold half a frame; pad if the hello goes unanswered. ``network``:
        the address the guest's NIC must have (told in every hello).

        Returns when the channel ends, however it ends; raises nothing once
        started (it runs in the runtime's nursery, beside every other
        sandbox's channel), and ``SandboxGone`` if it ends before.
        """
        nonce = os.urandom(16)
        decoder = GuestDecoder(encode_sync({"type": "hello", "nonce": nonce}))
        reason = "the host stopped serving the channel"
        ready = False
        try:
            try:
                async with trio.open_nursery() as nursery:
                    self._scope = nursery.cancel_scope
                    nursery.start_soon(self._write_loop)
                    greeter = trio.CancelScope()
                    nursery.start_soon(self._greet, greeter, nonce, session, reconnecting, network)
                    while self._closed is None:
                        try:
                            data = await self._stream.receive_some(_READ_SIZE)
                        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                            self._end(f"the connection broke ({exc})")
                            break
                        if not data:
                            self._end("the connection closed")
                            break
                        messages = decoder.feed(data)
                        if decoder.synced and not ready:
                            ready = True
                            greeter.cancel()
                            task_status.started(self)
                        self._route(messages)
            except* Exception:
                # A bug here must end this channel, not the runtime's nursery.
                log.exception("the guest channel failed", extra={"session_id": self.name})
                reason = "the host end of the channel failed"
        finally:
            if self._closed is None:
                self._end(reason)
            with trio.CancelScope(shield=True):
                await self._stream.aclose()
        if not ready:
            raise SandboxGone(f"the guest agent did not answer: {self._closed}")

    async def _greet(
        self, scope: trio.CancelScope, nonce: bytes, session: str, reconnecting: bool, network: GuestNetwork | None
    ) -> None:
        started = trio.current_time()
        flushed = not reconnecting
        where = {"address": str(network.address), "gateway": str(network.gateway)} if network is not None else None
        with scope:
            while True:
                if not flushed and trio.current_time() - started > _FLUSH_AFTER:
                    self._queue(flush_padding())
                    flushed = True
                hello = {
                    "type": "hello",
                    "nonce": nonce,
                    "time": time.time(),
                    "entropy": os.urandom(64),
                    "session": session,
                    "network": where,
                }
                self._queue(encode_sync(hello))
                await trio.sleep(_HELLO_EVERY)

    async def _write_loop(self) -> None:
        while (frame := await self.outbox.take()) is not None:
            try:
                await self._stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    def _route(self, messages: Iterator[Message]) -> None:
        """Apply what the guest sent, up to a violation of the protocol, which ends the channel."""
        try:
            for message in messages:
                self._dispatch(parse(message))
        except ProtocolViolation as exc:
            self._end(f"the guest broke the protocol: {exc}", logging.WARNING)

    def _dispatch(self, frame: GuestFrame) -> None:
        """Apply one frame from the guest; ``ProtocolViolation`` if the channel's state forbids it."""
        match frame:
            case Hello():
                pass  # the answer to a hello repeated while the guest booted
            case Bye():
                self._bye.set()
            case _ if frame.id > self._last_id:
                raise ProtocolViolation(f"{frame.kind} for id {frame.id}, which the host never gave out")
            case Reply():
                call = self._calls.pop(frame.id, None)
                if call is not None:  # else given up by the requester
                    call.reply = frame
                    call.done.set()
            case _:
                process = self._processes.get(frame.id)
                if process is not None:  # else released by the host, or a request's id
                    process.receive(frame)

    def _end(self, reason: str, level: int = logging.INFO) -> None:
        log.log(level, "guest channel closed: %s", reason, extra={"session_id": self.name})
        self._closed = reason
        self._bye.set()
        self.outbox.close()
        for process in self._processes.values():
            process.lost(reason)
        self._processes.clear()
        for call in self._calls.values():
            call.lost = reason
            call.done.set()
        self._calls.clear()
        if self._scope is not None:
            self._scope.cancel()

    def _queue(self, frame: bytes) -> None:
        """Queue a frame for the guest; one past the outbox's limit means the guest stopped reading."""
        if self._closed is None and not self.outbox.put(frame):
            self._end(f"the guest stopped reading: {self.outbox.size} bytes wait for it", logging.WARNING)

    def _next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def send(self, message: Message) -> None:
        """Queue a message; a no-op once the channel is closed."""
        self._queue(encode(message))

    def _admit(self) -> None:
        """Refuse work past the per-sandbox bound, or once the channel is closed.

        One sandbox's open processes, connections and pending requests are
        bounded, so no tenant's requests can pile up in the agent without
        limit (each open stream may buffer a window of output here).
        """
        if self._closed is not None:
            raise SandboxGone(f"no guest agent connection: {self._closed}")
        if len(self._processes) + len(self._calls) >= MAX_OPEN:
            raise Busy(f"the sandbox has {MAX_OPEN} processes, connections and requests open: try again later")

    async def spawn(
        self,
        spec: ProcessSpec,
        *,
        terminal: tuple[int, int] | None = None,
        tool: tuple[str, list[str]] | None = None,
    ) -> GuestProcess:
        """Start a process: with ``spec.stdin``, its input streamed from ``GuestProcess.stdin``;
        with ``terminal`` (cols, rows), on a new terminal whose keystrokes that input is; with
        ``tool`` (name, args), one of the agent's own tools (``vmimages.guest.tools``) instead of a program."""
        self._admit()
        stdin = spec.stdin and terminal is None
        process = GuestProcess(self, self._next_id(), spec.merge_stderr, stdin=stdin or terminal is not None)
        self._processes[process.id] = process
        request: dict[str, Any] = {
            "type": "exec",
            "id": process.id,
            "argv": list(spec.argv),
            "env": dict(spec.env),
            "cwd": spec.cwd,
            "merge_stderr": spec.merge_stderr,
            "stdin": stdin,
            "pty": {"cols": terminal[0], "rows": terminal[1]} if terminal is not None else None,
        }
        if tool is not None:
            request["tool"], request["args"] = tool[0], list(tool[1])
        self.send(request)
        await trio.lowlevel.checkpoint()
        return process

    async def connect(self, port: int) -> GuestProcess | None:
        """A TCP connection to ``port`` on the guest's loopback, as a child whose
        output is what arrives and whose input is what to send; None if refused."""
        self._admit()
        connection = GuestProcess(self, self._next_id(), True, stdin=True)
        self._processes[connection.id] = connection
        call = self._calls[connection.id] = _Call()
        try:
            self.send({"type": "connect", "id": connection.id, "port": port})
            await call.done.wait()
        finally:
            self._calls.pop(connection.id, None)
        if call.reply is None:
            raise SandboxGone(f"the guest agent went away: {call.lost}")
        if call.reply.error:
            self._processes.pop(connection.id, None)
            return None
        return connection

    async def request(self, message: Message, *, check: bool = True) -> Message:
        """Send ``message`` with a fresh id and wait for the guest's reply to it.

        With ``check``, the guest's ``error`` raises ``RuntimeFailure``; a lost
        connection always raises ``SandboxGone``.
        """
        self._admit()
        call_id = self._next_id()
        call = self._calls[call_id] = _Call()
        try:
            self.send({**message, "id": call_id})
            await call.done.wait()
        finally:
            self._calls.pop(call_id, None)
        if call.reply is None:
            raise SandboxGone(f"the guest agent went away: {call.lost}")
        if check and call.reply.error:
            raise RuntimeFailure(f"the guest agent could not {message['type']}: {call.reply.error}")
        return call.reply.message

    def release(self, process: GuestProcess) -> None:
        if self._processes.pop(process.id, None) is not None:
            self.send({"type": "close", "id": process.id})

    async def say_bye(self) -> None:
        """Leave the guest with nothing half-sent (before a snapshot), then close."""
        self.send({"type": "bye"})
        if self._closed is None:
            await self._bye.wait()
        self.close("the host said bye")

    def close(self, reason: str) -> None:
        if self._closed is None:
            self._end(reason)
