"""What a guest agent may say to the host, as typed frames; anything else is a ``ProtocolViolation``.

The guest is not trusted: whatever runs as root in it can write to the
channel. ``parse`` turns a decoded message (a msgpack map with a string
``type``, see ``vmimages.guest.protocol``) into one of the frozen
dataclasses below, checking each field the host uses: its type (an int is
an int, not a bool or a float), its range, its size. Fields the host does
not use are ignored. What depends on the channel's state (which ids were
given out, which streams are open, how much credit is owed) is
``GuestChannel``'s to check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from vmimages.guest.protocol import WINDOW, Message

# Ids are the host's counter; a guest's pid is at most Linux's PID_MAX_LIMIT.
MAX_ID = (1 << 63) - 1
MAX_PID = 1 << 22
# An exit status, or 128+N for a signal N.
MAX_CODE = 255
# Longest hello nonce echoed (the host sends 16 bytes), longest error text.
MAX_NONCE = 64
MAX_ERROR = 64 << 10
MAX_ERRNO = 4095


class ProtocolViolation(Exception):
    """The guest sent what the protocol does not allow: its channel ends."""


class _Fields:
    """A message's fields, read with checks; each failure says which message and field."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.kind: str = message["type"]

    def _fail(self, key: str, wanted: str) -> ProtocolViolation:
        return ProtocolViolation(f"{self.kind}: {key} must be {wanted}, not {describe(self.message.get(key))}")

    def integer(self, key: str, low: int, high: int) -> int:
        value = self.message.get(key)
        # type() rather than isinstance: True is an int to Python, not to the protocol.
        if type(value) is not int or not low <= value <= high:
            raise self._fail(key, f"an int in [{low}, {high}]")
        return value

    def optional_integer(self, key: str, low: int, high: int) -> int | None:
        return None if self.message.get(key) is None else self.integer(key, low, high)

    def octets(self, key: str, low: int, high: int) -> bytes:
        value = self.message.get(key)
        if type(value) is not bytes or not low <= len(value) <= high:
            raise self._fail(key, f"{low} to {high} bytes")
        return value

    def optional_text(self, key: str, high: int) -> str | None:
        value = self.message.get(key)
        if value is not None and (type(value) is not str or len(value) > high):
            raise self._fail(key, f"nil or a string of at most {high} characters")
        return value

    def optional_text_or_flag(self, key: str, high: int) -> str | bool | None:
        value = self.message.get(key)
        return value if type(value) is bool else self.optional_text(key, high)

    def id(self) -> int:
        return self.integer("id", 1, MAX_ID)

    def fd(self) -> int:
        return self.integer("fd", 1, 2)


@dataclass(frozen=True)
class Hello:
    """The answer to a hello (one repeated while the guest booted, once synced)."""

    kind: ClassVar[str] = "hello"
    nonce: bytes

    @classmethod
    def read(cls, fields: _Fields) -> Hello:
        return cls(fields.octets("nonce", 0, MAX_NONCE))


@dataclass(frozen=True)
class Started:
    kind: ClassVar[str] = "started"
    id: int
    pid: int

    @classmethod
    def read(cls, fields: _Fields) -> Started:
        return cls(fields.id(), fields.integer("pid", 1, MAX_PID))


@dataclass(frozen=True)
class Output:
    """Output of stream ``fd``; never empty (an empty read is the stream's end, sent as ``Eof``)."""

    kind: ClassVar[str] = "output"
    id: int
    fd: int
    data: bytes

    @classmethod
    def read(cls, fields: _Fields) -> Output:
        return cls(fields.id(), fields.fd(), fields.octets("data", 1, WINDOW))


@dataclass(frozen=True)
class Eof:
    kind: ClassVar[str] = "eof"
    id: int
    fd: int

    @classmethod
    def read(cls, fields: _Fields) -> Eof:
        return cls(fields.id(), fields.fd())


@dataclass(frozen=True)
class InputCredit:
    """``count`` bytes of input were written on (never more than were sent: at most ``WINDOW``)."""

    kind: ClassVar[str] = "input_credit"
    id: int
    count: int

    @classmethod
    def read(cls, fields: _Fields) -> InputCredit:
        return cls(fields.id(), fields.integer("bytes", 0, WINDOW))


@dataclass(frozen=True)
class Exit:
    kind: ClassVar[str] = "exit"
    id: int
    code: int

    @classmethod
    def read(cls, fields: _Fields) -> Exit:
        return cls(fields.id(), fields.integer("code", 0, MAX_CODE))


@dataclass(frozen=True)
class Bye:
    kind: ClassVar[str] = "bye"

    @classmethod
    def read(cls, fields: _Fields) -> Bye:
        return cls()


@dataclass(frozen=True)
class Reply:
    """The answer to a request; ``message`` is all of it, for the requester (a file operation's result).

    The fields requesters read besides ``ok`` are checked here: ``refused``
    (a connection refused, or the kind of a file problem) and ``errno``.
    """

    kind: ClassVar[str] = "reply"
    id: int
    error: str | None
    message: Message

    @classmethod
    def read(cls, fields: _Fields) -> Reply:
        fields.optional_integer("errno", 1, MAX_ERRNO)
        fields.optional_text_or_flag("refused", MAX_ERROR)
        return cls(fields.id(), fields.optional_text("error", MAX_ERROR), fields.message)


GuestFrame = Hello | Started | Output | Eof | InputCredit | Exit | Bye | Reply

_READERS: dict[str, Callable[[_Fields], GuestFrame]] = {
    Hello.kind: Hello.read,
    Started.kind: Started.read,
    Output.kind: Output.read,
    Eof.kind: Eof.read,
    InputCredit.kind: InputCredit.read,
    Exit.kind: Exit.read,
    Bye.kind: Bye.read,
    Reply.kind: Reply.read,
}


def parse(message: Message) -> GuestFrame:
    """The typed frame ``message`` is, or ``ProtocolViolation``."""
    reader = _READERS.get(message["type"])
    if reader is None:
        raise ProtocolViolation(f"unknown message type {describe(message['type'])}")
    return reader(_Fields(message))


def describe(value: object) -> str:
    """A short account of a hostile value for a log line (its repr could be megabytes)."""
    if isinstance(value, str | bytes | bytearray | list | dict):
        shown = repr(value[:40]) if isinstance(value, str | bytes | bytearray) else ""
        return f"{type(value).__name__} of length {len(value)} {shown}".rstrip()
    return repr(value)[:80]
