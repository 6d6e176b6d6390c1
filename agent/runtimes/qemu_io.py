"""A VM's session endpoints over its guest channel: terminals, stdin, ports, files, tar streams.

What the lxc runtime does by entering the container, the qemu runtime asks
the guest agent for (``vmimages.guest.protocol``): a process on a terminal,
a TCP connection to a port on the guest's loopback, file operations
(``vmimages.guest.fileops``). Bytes of files and tar streams travel as the
output and input of processes in the guest (``cat``, GNU ``tar``), so they
are streamed with the channel's flow control both ways and never held whole;
a tar upload is extracted by the guest's copy of ``vmimages.guest.untar``.
"""

from __future__ import annotations

import contextlib
import signal

import trio

from agent.guest_channel import GuestChannel, GuestInput, GuestOutput, GuestProcess
from agent.runtimes.base import FileError, FileInfo, FileReader, FileWriter, PtyProcess, RuntimeFailure, file_error

# For the tools the runtime runs in the guest.
TOOL_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

# tar of a directory (as its contents) or of a file (as itself), to stdout.
ARCHIVE = (
    'if [ -d "$0" ]; then exec tar --format=pax -cf - -C "$0" .; '
    'else exec tar --format=pax -cf - -C "$(dirname -- "$0")" -- "$(basename -- "$0")"; fi'
)
# Into a directory, by the guest's copy of our extractor (the rules of
# tarfile's "data" filter: see vmimages.guest.untar).
EXTRACT = ["python3", "-S", "-m", "vmimages.guest.untar"]
GUEST_PYTHONPATH = "/run/chaser"
# stdin into a file that already exists (a temporary one from fileops.prepare_write).
WRITE = 'exec cat > "$0"'


async def file_operation(channel: GuestChannel, op: str, *args: object) -> object:
    """Run ``fileops.OPERATIONS[op]`` in the guest; its result, or the ``FileError`` it meant."""
    reply = await channel.request({"type": "file", "op": op, "args": list(args)}, check=False)
    error = reply.get("error")
    if not error:
        return reply.get("ok")
    if reply.get("refused"):
        raise FileError(str(reply["refused"]), str(error))
    raise file_error(int(reply.get("errno", 0)), str(error))


def file_info(raw: object) -> FileInfo:
    assert isinstance(raw, dict)
    return FileInfo(**raw)


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
    """A regular file of the guest, as ``cat`` streams it."""

    def __init__(self, process: GuestProcess, size: int, mtime: float) -> None:
        self._process = process
        self._output = _output_of(process)
        self.size = size
        self.mtime = mtime

    async def read(self, max_bytes: int) -> bytes:
        chunk = await self._output.receive_some(max_bytes)
        if not chunk and await self._process.wait() != 0:
            raise RuntimeFailure("reading the file in the guest failed")
        return chunk

    async def aclose(self) -> None:
        self._process.kill()
        await self._process.aclose()


class GuestFileWriter(FileWriter):
    """A temporary file beside the target, filled by ``cat``; renamed in place on ``commit``."""

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
            raise RuntimeFailure(f"writing {self._path} in the guest failed (exit {code})")
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
