"""The msgpack frames spoken over session WebSockets (PTY and exec streams).

One WebSocket binary message carries one frame: a msgpack map whose ``t``
names its type. Client frames are validated strictly (unknown types, fields
or wrong types are refused, sizes are capped); server frames are built by
the small functions at the end. No I/O here: the agent, the SDK and the
tests all use these.

PTY connection (``/s/<id>/pty``), one WebSocket multiplexing channels:

    client: open{ch, cmd?, cols, rows, env, cwd?}  attach{ch, pty}  in{ch, d}
            resize{ch, cols, rows}  signal{ch, sig}  detach{ch}  close{ch}  ping
    server: hello{keepalive}  opened{ch, pty, cols, rows}  out{ch, d}
            exit{ch, code}  error{ch?, code, message}  pong

Exec connection (``/s/<id>/exec``), one process:

    client: exec{cmd, env, cwd?, timeout_ms?, stdin}  in{d}  eof  signal{sig}  ping
    server: hello{keepalive}  started  out{d}  err{d}  exit{code, timed_out}
            error{code, message}  pong
"""

from __future__ import annotations

import signal
from typing import Annotated, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

# Largest frame a client may send (a WebSocket message), and the largest data
# chunk the server puts in one frame.
MAX_CLIENT_FRAME = 1 << 20
MAX_DATA_CHUNK = 512 << 10

MAX_CHANNEL = 1 << 16
MAX_TERMINAL_SIZE = 1000

EnvName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^=\x00]+$")]
EnvValue = Annotated[str, StringConstraints(max_length=32768, pattern=r"^[^\x00]*$")]
Command = (
    Annotated[str, StringConstraints(min_length=1, max_length=65536)]
    | Annotated[list[Annotated[str, StringConstraints(max_length=65536)]], Field(min_length=1, max_length=4096)]
)
Channel = Annotated[int, Field(ge=0, le=MAX_CHANNEL)]
TerminalSize = Annotated[int, Field(ge=1, le=MAX_TERMINAL_SIZE)]
Cwd = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
SignalSpec = Annotated[int, Field(ge=1, le=64)] | Annotated[str, StringConstraints(min_length=1, max_length=16)]


class FrameError(Exception):
    """A client frame that cannot be accepted; ``code`` is stable, the message says why.

    ``ch`` is the channel the frame was about, when it is known.
    """

    def __init__(self, code: str, message: str, ch: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ch = ch


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Open(_Frame):
    t: Literal["open"]
    ch: Channel
    cmd: Command | None = None
    cols: TerminalSize = 80
    rows: TerminalSize = 24
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=256)
    cwd: Cwd | None = None


class Attach(_Frame):
    t: Literal["attach"]
    ch: Channel
    pty: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Input(_Frame):
    t: Literal["in"]
    ch: Channel = 0
    d: bytes


class Resize(_Frame):
    t: Literal["resize"]
    ch: Channel
    cols: TerminalSize
    rows: TerminalSize


class Signal(_Frame):
    t: Literal["signal"]
    ch: Channel = 0
    sig: SignalSpec


class Detach(_Frame):
    t: Literal["detach"]
    ch: Channel


class Close(_Frame):
    t: Literal["close"]
    ch: Channel


class Ping(_Frame):
    t: Literal["ping"]


class Exec(_Frame):
    t: Literal["exec"]
    cmd: Command
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=256)
    cwd: Cwd | None = None
    timeout_ms: Annotated[int, Field(gt=0, le=86_400_000)] | None = None
    stdin: bool = False


class Eof(_Frame):
    t: Literal["eof"]


PtyClientFrame = Annotated[Open | Attach | Input | Resize | Signal | Detach | Close | Ping, Field(discriminator="t")]
ExecClientFrame = Annotated[Exec | Input | Eof | Signal | Ping, Field(discriminator="t")]

_PTY_FRAMES: TypeAdapter[PtyClientFrame] = TypeAdapter(PtyClientFrame)
_EXEC_FRAMES: TypeAdapter[ExecClientFrame] = TypeAdapter(ExecClientFrame)


def _unpack(data: bytes | str) -> Any:
    if isinstance(data, str):
        raise FrameError("invalid_frame", "frames are binary WebSocket messages holding msgpack")
    if len(data) > MAX_CLIENT_FRAME:
        raise FrameError("frame_too_large", f"frame of {len(data)} bytes exceeds {MAX_CLIENT_FRAME}")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise FrameError("invalid_frame", f"not a msgpack frame: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("t"), str):
        raise FrameError("invalid_frame", 'a frame is a msgpack map with a string "t"')
    return value


def _validate(adapter: TypeAdapter[Any], data: bytes | str) -> Any:
    value = _unpack(data)
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "frame"
        raise FrameError("invalid_frame", f"{value['t']} frame: {where}: {first['msg']}") from None


def decode_pty(data: bytes | str) -> Open | Attach | Input | Resize | Signal | Detach | Close | Ping:
    frame: Open | Attach | Input | Resize | Signal | Detach | Close | Ping = _validate(_PTY_FRAMES, data)
    return frame


def decode_exec(data: bytes | str) -> Exec | Input | Eof | Signal | Ping:
    frame: Exec | Input | Eof | Signal | Ping = _validate(_EXEC_FRAMES, data)
    return frame


def signal_number(spec: int | str) -> int:
    """``15``, ``"TERM"`` or ``"SIGTERM"`` to 15; anything else is a FrameError."""
    if isinstance(spec, int):
        return spec
    name = spec.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise FrameError("invalid_frame", f"unknown signal {spec!r}") from None


def encode(frame: dict[str, Any]) -> bytes:
    """Pack a frame (client or server side) for a binary WebSocket message."""
    packed: bytes = msgpack.packb(frame, use_bin_type=True)
    return packed


def decode_any(data: bytes) -> dict[str, Any]:
    """Unpack a server frame, for clients; no validation beyond being a typed map."""
    value: dict[str, Any] = _unpack(data)
    return value


# -- server frames -----------------------------------------------------------


def hello(keepalive: float) -> bytes:
    return encode({"t": "hello", "keepalive": keepalive})


def opened(ch: int, pty: str, cols: int, rows: int) -> bytes:
    return encode({"t": "opened", "ch": ch, "pty": pty, "cols": cols, "rows": rows})


def output(data: bytes, ch: int | None = None, stream: str = "out") -> bytes:
    frame: dict[str, Any] = {"t": stream, "d": data}
    if ch is not None:
        frame["ch"] = ch
    return encode(frame)


def exited(code: int, ch: int | None = None, timed_out: bool | None = None) -> bytes:
    frame: dict[str, Any] = {"t": "exit", "code": code}
    if ch is not None:
        frame["ch"] = ch
    if timed_out is not None:
        frame["timed_out"] = timed_out
    return encode(frame)


def error(code: str, message: str, ch: int | None = None) -> bytes:
    frame: dict[str, Any] = {"t": "error", "code": code, "message": message}
    if ch is not None:
        frame["ch"] = ch
    return encode(frame)


def started() -> bytes:
    return encode({"t": "started"})


def pong() -> bytes:
    return encode({"t": "pong"})
