"""A sandbox's session endpoints over its sandbox channel: terminals, stdin, ports, files, tar streams.

Both runtimes (a VM's guest agent on virtio-serial, a container's on a unix
socket) serve processes, terminals, file operations
(``vmimages.guest.fileops``) and file streams through the one in-sandbox
agent, so ``ChannelEndpoints`` implements those runtime operations once for
both: the host never runs code of its own inside a sandbox. Bytes of files
and tar streams travel as the output and input of the agent's own tools
(``vmimages.guest.tools``, forked children that need nothing from the
image), streamed with the channel's flow control both ways and never held
whole.
"""

from __future__ import annotations

import abc
import contextlib
import signal
from collections import defaultdict
from typing import Any

import trio

from agent.runtimes.base import (
    FileError,
    FileInfo,
    FileReader,
    FileWriter,
    Process,
    ProcessSpec,
    PtyProcess,
    PtySpec,
    Runtime,
    RuntimeFailure,
    file_error,
)
from agent.runtimes.channel.guest_channel import GuestChannel, GuestInput, GuestOutput, GuestProcess

# How long a file operation in the sandbox (stat, list, mkdir, ...) may take:
# a filesystem that never answers (a stalled FUSE mount) fails the request.
FILE_OPERATION_TIMEOUT = 30.0


async def file_operation(channel: GuestChannel, op: str, *args: object) -> object:
    """Run ``fileops.OPERATIONS[op]`` in the sandbox; its result, or the ``FileError`` it meant."""
    with trio.move_on_after(FILE_OPERATION_TIMEOUT) as waited:
        reply = await channel.request({"type": "file", "op": op, "args": list(args)}, check=False)
    if waited.cancelled_caught:
        raise RuntimeFailure(f"the sandbox did not answer a file operation ({op}) within {FILE_OPERATION_TIMEOUT:g}s")
    error = reply.get("error")
    if not error:
        return reply.get("ok")
    if reply.get("refused"):
        raise FileError(str(reply["refused"]), str(error))
    raise file_error(int(reply.get("errno", 0)), str(error))


class MalformedAnswer(RuntimeFailure):
    """The sandbox's agent answered with something of the wrong shape (it is hostile input)."""


_FILE_TYPES = ("file", "directory", "symlink", "other")


def _field(raw: object, key: str, *kinds: type) -> Any:
    """``raw[key]`` if ``raw`` is a map and the value is one of ``kinds`` (a bool is no number)."""
    value = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise MalformedAnswer(f"the sandbox's agent answered a malformed {key!r}")
    return value


def file_info(raw: object) -> FileInfo:
    """What the sandbox says of a file, checked field by field."""
    kind = _field(raw, "type", str)
    size, mode = _field(raw, "size", int), _field(raw, "mode", int)
    link = raw.get("link_target") if isinstance(raw, dict) else None
    if kind not in _FILE_TYPES or size < 0 or not 0 <= mode <= 0o7777 or not isinstance(link, str | None):
        raise MalformedAnswer("the sandbox's agent described a file impossibly")
    return FileInfo(
        name=_field(raw, "name", str),
        path=_field(raw, "path", str),
        type=kind,
        size=size,
        mode=mode,
        mtime=float(_field(raw, "mtime", int, float)),
        link_target=link,
    )


def _input_of(process: GuestProcess) -> GuestInput:
    assert process.stdin is not None, "started without input"
    return process.stdin


def _output_of(process: GuestProcess) -> GuestOutput:
    output = process.output(1)
    assert output is not None
    return output


class GuestTerminal(trio.abc.Stream):
    """The master side of a terminal in the guest: its output, and keystrokes in."""

    def __init__(self, process: GuestProcess) -> None:
        self._process = process
        self._input = _input_of(process)
        self._output = _output_of(process)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._input.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._input.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._output.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._process.aclose()


class GuestPty(PtyProcess):
    """A process on a terminal of the guest; closing the terminal hangs it up."""

    def __init__(self, process: GuestProcess) -> None:
        self._process = process
        self.terminal = GuestTerminal(process)

    async def wait(self) -> int:
        return await self._process.wait()

    def resize(self, cols: int, rows: int) -> None:
        self._process.resize(cols, rows)

    def signal(self, sig: int) -> None:
        self._process.signal_foreground(sig)

    def kill(self) -> None:
        self._process.signal_foreground(signal.SIGKILL)
        self._process.kill(signal.SIGKILL)

    async def aclose(self) -> None:
        await self._process.aclose()


class GuestConnection(trio.abc.HalfCloseableStream):
    """A TCP connection the guest agent holds to one of the guest's ports."""

    def __init__(self, connection: GuestProcess) -> None:
        self._connection = connection
        self._input = _input_of(connection)
        self._output = _output_of(connection)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._input.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._input.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._input.aclose()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._output.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._connection.aclose()


class GuestFileReader(FileReader):
    """A regular file of the sandbox, as the agent's ``read`` tool streams it."""

    def __init__(self, process: GuestProcess, size: int, mtime: float) -> None:
        self._process = process
        self._output = _output_of(process)
        self.size = size
        self.mtime = mtime

    async def read(self, max_bytes: int) -> bytes:
        chunk = await self._output.receive_some(max_bytes)
        if not chunk and await self._process.wait() != 0:
            raise RuntimeFailure("reading the file in the sandbox failed")
        return chunk

    async def aclose(self) -> None:
        self._process.kill()
        await self._process.aclose()


class GuestFileWriter(FileWriter):
    """A temporary file beside the target, filled by the ``write`` tool; renamed in place on ``commit``."""

    def __init__(self, channel: GuestChannel, process: GuestProcess, temp: str, path: str) -> None:
        self._channel = channel
        self._process = process
        self._input = _input_of(process)
        self._temp = temp
        self._path = path
        self._done = False

    async def write(self, data: bytes) -> None:
        await self._input.send_all(data)

    async def commit(self) -> None:
        await self._input.aclose()
        code = await self._process.wait()
        await self._process.aclose()
        if code != 0:
            await self.abort()
            raise RuntimeFailure(f"writing {self._path} in the sandbox failed (exit {code})")
        self._done = True
        await file_operation(self._channel, "finish_write", self._temp, self._path, True)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._process.kill()
        with trio.CancelScope(shield=True):
            await self._process.aclose()
            # If the VM went away, the temporary file went with it.
            with contextlib.suppress(RuntimeFailure):
                await file_operation(self._channel, "finish_write", self._temp, self._path, False)


class ChannelEndpoints(Runtime):
    """The runtime operations every sandbox's in-sandbox agent serves, written once,
    and the book of live channels to those agents.

    A runtime supplies ``_reconnect``: a new channel to a running sandbox's
    agent. Channels' reader tasks run in the runtime's nursery (``run``);
    a channel lost with its agent (a restart) is opened again on first use.
    """

    def __init__(self) -> None:
        self._channels: dict[str, GuestChannel] = {}
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the channels' tasks (and the runtime's other background work) until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for channel in self._channels.values():
                channel.close("the agent is stopping")
            self._channels.clear()
            self._stopped()

    def _stopped(self) -> None:
        """Once ``run`` has ended: whatever the runtime tidies then."""

    async def channel(self, sandbox_id: str) -> GuestChannel:
        """The live channel to the sandbox's agent, connecting anew if needed (``SandboxGone`` if not running)."""
        channel = self._channels.get(sandbox_id)
        if channel is not None and not channel.closed:
            return channel
        async with self._locks[sandbox_id]:
            channel = self._channels.get(sandbox_id)
            if channel is not None and not channel.closed:
                return channel
            return await self._reconnect(sandbox_id)

    @abc.abstractmethod
    async def _reconnect(self, sandbox_id: str) -> GuestChannel:
        """A new channel to the running sandbox's agent, recorded in ``_channels``."""

    def _rename_channel(self, old_id: str, new_id: str) -> None:
        """The sandbox ``old_id`` is ``new_id`` from now on: so is its channel."""
        if old_id in self._channels:
            self._channels[new_id] = self._channels.pop(old_id)
        if old_id in self._locks:
            self._locks[new_id] = self._locks.pop(old_id)

    def _drop_channel(self, sandbox_id: str, reason: str) -> None:
        channel = self._channels.pop(sandbox_id, None)
        if channel is not None:
            channel.close(reason)

    async def _tool(self, sandbox_id: str, tool: str, path: str, *, stdin: bool) -> GuestProcess:
        channel = await self.channel(sandbox_id)
        spec = ProcessSpec(argv=[f"chaser-{tool}"], env={}, merge_stderr=False, stdin=stdin)
        return await channel.spawn(spec, tool=(tool, [path]))

    async def spawn(self, sandbox_id: str, spec: ProcessSpec) -> Process:
        channel = await self.channel(sandbox_id)
        return await channel.spawn(spec)

    async def spawn_pty(self, sandbox_id: str, spec: PtySpec) -> PtyProcess:
        channel = await self.channel(sandbox_id)
        process = await channel.spawn(
            ProcessSpec(argv=spec.argv, env=spec.env, cwd=spec.cwd), terminal=(spec.cols, spec.rows)
        )
        return GuestPty(process)

    async def open_file(self, sandbox_id: str, path: str) -> FileReader:
        info = await file_operation(await self.channel(sandbox_id), "open", path)
        process = await self._tool(sandbox_id, "read", path, stdin=False)
        size, mtime = _field(info, "size", int), _field(info, "mtime", int, float)
        return GuestFileReader(process, max(size, 0), float(mtime))

    async def create_file(self, sandbox_id: str, path: str, *, parents: bool) -> FileWriter:
        channel = await self.channel(sandbox_id)
        prepared = await file_operation(channel, "prepare_write", path, parents)
        temp = _field(prepared, "temp", str)
        process = await self._tool(sandbox_id, "write", temp, stdin=True)
        return GuestFileWriter(channel, process, temp, path)

    async def stat(self, sandbox_id: str, path: str) -> FileInfo:
        return file_info(await file_operation(await self.channel(sandbox_id), "stat", path))

    async def list_dir(self, sandbox_id: str, path: str, limit: int) -> tuple[list[FileInfo], bool]:
        listing = await file_operation(await self.channel(sandbox_id), "list", path, limit)
        entries = _field(listing, "entries", list)
        if len(entries) > limit:
            raise MalformedAnswer("the sandbox's agent listed more entries than asked for")
        return [file_info(entry) for entry in entries], _field(listing, "truncated", bool)

    async def mkdir(self, sandbox_id: str, path: str, *, parents: bool) -> None:
        await file_operation(await self.channel(sandbox_id), "mkdir", path, parents)

    async def remove(self, sandbox_id: str, path: str, *, recursive: bool) -> None:
        await file_operation(await self.channel(sandbox_id), "remove", path, recursive)

    async def rename(self, sandbox_id: str, source: str, target: str, *, overwrite: bool) -> None:
        await file_operation(await self.channel(sandbox_id), "rename", source, target, overwrite)

    async def archive(self, sandbox_id: str, path: str) -> Process:
        return await self._tool(sandbox_id, "archive", path, stdin=False)

    async def extract(self, sandbox_id: str, path: str) -> Process:
        return await self._tool(sandbox_id, "extract", path, stdin=True)
