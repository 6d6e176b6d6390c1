"""The PTY multiplexer's protocol core: one client connection's channels, no I/O.

A client opens or attaches terminals on channels it numbers itself; the
same terminal may be attached by several connections at once (each sees
all output), and outlives them: a client that reconnects attaches again by
terminal id and gets the scrollback first. ``PtyMux`` turns the client's
frames into actions for the I/O layer (``agent.endpoints.pty``) and the terminals'
events into frames for this client, and enforces the per-connection rules
(channel numbers, limits, which terminal a channel names). ``Scrollback``
is the bounded output history a terminal keeps for reattaching clients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chaser.wire import frames
from chaser.wire.frames import FrameError

# Without a command, a terminal runs the image's login shell.
LOGIN_SHELL = ("/bin/sh", "-c", "if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi")
DEFAULT_TERM = "xterm-256color"


class Scrollback:
    """The last ``limit`` bytes a terminal wrote."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()

    def append(self, data: bytes) -> None:
        self._buf += data
        excess = len(self._buf) - self.limit
        if excess > 0:
            del self._buf[:excess]

    def snapshot(self) -> bytes:
        return bytes(self._buf)


@dataclass(frozen=True)
class OpenPty:
    ch: int
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str | None
    cols: int
    rows: int


@dataclass(frozen=True)
class AttachPty:
    ch: int
    pty: str


@dataclass(frozen=True)
class WriteInput:
    pty: str
    data: bytes


@dataclass(frozen=True)
class ResizePty:
    pty: str
    cols: int
    rows: int


@dataclass(frozen=True)
class SignalPty:
    pty: str
    sig: int


@dataclass(frozen=True)
class DetachPty:
    pty: str


@dataclass(frozen=True)
class ClosePty:
    pty: str


@dataclass(frozen=True)
class Send:
    frame: bytes


Action = OpenPty | AttachPty | WriteInput | ResizePty | SignalPty | DetachPty | ClosePty | Send


class PtyMux:
    """Channel bookkeeping of one client connection."""

    def __init__(self, max_channels: int) -> None:
        self.max_channels = max_channels
        self._pending: set[int] = set()
        self._channels: dict[int, str] = {}
        self._by_pty: dict[str, int] = {}

    @property
    def attached(self) -> list[str]:
        """Terminals this connection is attached to (to detach on disconnect)."""
        return list(self._by_pty)

    def receive(self, data: bytes | str) -> list[Action]:
        """Actions for one client frame; a bad frame yields an error frame, not an exception."""
        try:
            return self._receive(frames.decode_pty(data))
        except FrameError as exc:
            return [Send(frames.error(exc.code, exc.message, exc.ch))]

    def _receive(self, frame: frames.Open | frames.Attach | frames.Input | frames.Resize | frames.Signal
                 | frames.Detach | frames.Close | frames.Ping) -> list[Action]:  # fmt: skip
        if isinstance(frame, frames.Ping):
            return [Send(frames.pong())]
        if isinstance(frame, frames.Open | frames.Attach):
            self._claim(frame.ch)
            if isinstance(frame, frames.Attach):
                if frame.pty in self._by_pty:
                    self._pending.discard(frame.ch)
                    raise FrameError("already_attached", f"terminal {frame.pty} is already on a channel", frame.ch)
                return [AttachPty(frame.ch, frame.pty)]
            argv = LOGIN_SHELL if frame.cmd is None else _argv(frame.cmd)
            env = {"TERM": DEFAULT_TERM, **frame.env}
            return [OpenPty(frame.ch, argv, env, frame.cwd, frame.cols, frame.rows)]
        pty = self._channels.get(frame.ch)
        if pty is None:
            raise FrameError("unknown_channel", f"channel {frame.ch} has no terminal", frame.ch)
        if isinstance(frame, frames.Input):
            return [WriteInput(pty, frame.d)] if frame.d else []
        if isinstance(frame, frames.Resize):
            return [ResizePty(pty, frame.cols, frame.rows)]
        if isinstance(frame, frames.Signal):
            try:
                return [SignalPty(pty, frames.signal_number(frame.sig))]
            except FrameError as exc:
                raise FrameError(exc.code, exc.message, frame.ch) from None
        if isinstance(frame, frames.Detach):
            self._unmap(pty)
            return [DetachPty(pty)]
        return [ClosePty(pty)]

    def _claim(self, ch: int) -> None:
        if ch in self._channels or ch in self._pending:
            raise FrameError("channel_in_use", f"channel {ch} is already in use", ch)
        if len(self._channels) + len(self._pending) >= self.max_channels:
            raise FrameError("too_many_channels", f"at most {self.max_channels} channels per connection", ch)
        self._pending.add(ch)

    def _unmap(self, pty: str) -> int | None:
        ch = self._by_pty.pop(pty, None)
        if ch is not None:
            del self._channels[ch]
        return ch

    # -- events from the I/O layer --------------------------------------------

    def opened(self, ch: int, pty: str, cols: int, rows: int) -> bytes:
        """The terminal asked for on ``ch`` is there; the frame announcing it."""
        self._pending.discard(ch)
        self._channels[ch] = pty
        self._by_pty[pty] = ch
        return frames.opened(ch, pty, cols, rows)

    def open_failed(self, ch: int, code: str, message: str) -> bytes:
        self._pending.discard(ch)
        return frames.error(code, message, ch)

    def output(self, pty: str, data: bytes) -> list[bytes]:
        """Frames carrying ``data`` of terminal ``pty`` to this client, if attached."""
        ch = self._by_pty.get(pty)
        if ch is None:
            return []
        step = frames.MAX_DATA_CHUNK
        return [frames.output(data[i : i + step], ch) for i in range(0, len(data), step)]

    def exited(self, pty: str, code: int) -> bytes | None:
        """Terminal ``pty`` ended; its channel is free again."""
        ch = self._unmap(pty)
        return None if ch is None else frames.exited(code, ch)

    def dropped(self, pty: str, code: str, message: str) -> bytes | None:
        """This client was detached from ``pty`` (too slow, terminal closed by force)."""
        ch = self._unmap(pty)
        return None if ch is None else frames.error(code, message, ch)


def _argv(cmd: str | list[str]) -> list[str]:
    return ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
