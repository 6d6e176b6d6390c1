"""The guest channel's wire format: msgpack messages in length-prefixed frames.

The host agent and the guest agent speak over one byte stream (a
virtio-serial port). That stream is cut and re-joined under both of them:
the host agent restarts, or the VM is paused into a file and resumed by a
new QEMU; half a frame can be left in a buffer on either side. So:

- A receiver starts out *hunting*: it skips bytes up to ``SYNC``, a 16-byte
  marker sent before every ``hello``, and decodes frames from there on; a
  malformed frame sends it hunting again. The first four bytes of ``SYNC``
  read as a length far over ``MAX_FRAME``, so a marker that arrives where a
  frame header is expected is itself seen as malformed, and then found.
- The host, on a new connection, skips everything up to the exact bytes of
  the answer to *its* hello (which echoes a fresh random nonce), so nothing
  stale can pass for the start of the session.
- A guest that kept half a frame from an earlier session waits for the rest
  of it; ``flush_padding`` (zeros, one maximal frame long) completes any such
  frame, which then fails to decode, and the guest hunts again. The host
  sends it when a reconnection's hello goes unanswered.
- Before a pause the host says ``bye`` and waits for the answer, so the
  snapshot holds a guest with nothing half-read or half-sent.

A message is a msgpack map with a ``type`` (``bytes`` stay bytes):

host → guest
    hello    nonce, time (UNIX seconds), entropy (bytes), session (id),
             network (address as "a.b.c.d/n" and gateway, or nil):
             a new host session. The guest detaches every process of the
             previous one, sets its clock, reseeds its RNG, gives eth0
             that address and default route (unless it has them already),
             answers ``hello`` with the same nonce (and nothing else).
    exec     id, argv, env, cwd, merge_stderr, stdin (bool: a pipe to
             stream input into, else /dev/null), pty (nil, or cols and
             rows: run on a new terminal; its output is stream 1, its
             input the keystrokes), tool (optional: the name of one of
             ``tools.TOOLS`` to run in a forked child instead of argv,
             with args, a list of strings): start a process.
    connect  id, port: open a TCP connection to the guest's loopback;
             answered by ``reply`` (error and refused set if it was),
             then a stream like a process's: output/eof one way,
             input/input_eof the other, no exit until it ends.
    kill     id, signal, foreground (bool): signal the process group, or
             (a terminal's) the foreground process group.
    credit   id, fd, bytes: the host consumed that much of a stream.
    input    id, data: bytes for the process's stdin, terminal or socket;
             at most ``WINDOW`` bytes not yet answered by ``input_credit``.
    input_eof  id: no more input (stdin closed, socket half-closed).
    resize   id, cols, rows: a terminal's new size.
    close    id: the host is done with the process's streams.
    bye      the host is about to disconnect: detach every process, answer.
    freeze   id, path, frozen (bool): freeze or thaw the filesystem mounted
             at path; answered by ``reply``. The guest thaws what it froze
             when the host goes away.
    file     id, op, args: a file operation (``fileops.OPERATIONS``);
             answered by ``reply`` with ok (its result), or error and
             refused (a kind of problem) or errno.
    sync     id: write everything cached to the disks (before the host
             ends the VM); answered by ``reply``.
guest → host
    hello    nonce (echoed).
    started  id, pid.
    output   id, fd (1 or 2), data.
    eof      id, fd.
    input_credit  id, bytes: that much input was written on.
    exit     id, code (128+N when killed by signal N), sent once the
             output read before it has been sent.
    bye      nothing more follows on this connection.
    reply    id, error (nil, or what went wrong): the answer to a request.

Output is flow-controlled per stream: the guest sends at most ``WINDOW``
bytes the host has not credited back, so a reader that stops reading stops
the process (its pipe fills) rather than filling the host's memory; input
likewise the other way, so a process that stops reading its stdin stops
the host's writer rather than filling the guest's memory.

No I/O here: ``FrameDecoder`` is fed bytes and returns messages (as h11
does), so both sides and the tests share this code.
"""

from __future__ import annotations

import struct

import msgpack

TYPE_CHECKING = False  # importing typing costs milliseconds at every start; mypy reads this as typing's
if TYPE_CHECKING:
    from typing import Any

SYNC = b"\xfe\xedCHASER\x00SYNC\x00\x01\x02"
MAX_FRAME = 2 << 20
WINDOW = 2 << 20
HEADER = struct.Struct(">I")

Message = dict[str, "Any"]

assert len(SYNC) == 16 and HEADER.unpack_from(SYNC)[0] > MAX_FRAME


def encode(message: Message) -> bytes:
    """One frame: the payload's length, then the msgpack payload."""
    payload: bytes = msgpack.packb(message, use_bin_type=True)
    if len(payload) > MAX_FRAME:
        raise ValueError(f"message of {len(payload)} bytes is over the {MAX_FRAME}-byte frame limit")
    return HEADER.pack(len(payload)) + payload


def encode_sync(message: Message) -> bytes:
    """A frame preceded by SYNC, where a receiver can find its footing."""
    return SYNC + encode(message)


def flush_padding() -> bytes:
    """Zeros enough to complete any half-received frame (see the module doc)."""
    return bytes(HEADER.size + MAX_FRAME)


class FrameDecoder:
    """Bytes in, messages out; re-synchronises on ``SYNC`` after garbage.

    ``first`` is what to hunt for at the start (``SYNC`` unless given): the
    host passes the exact frame that answers its hello. It is consumed, not
    returned.
    """

    def __init__(self, first: bytes = SYNC) -> None:
        self._buf = bytearray()
        self._marker = first
        self.synced = False
        # How many times a malformed frame sent it hunting (for logs and tests).
        self.resyncs = 0

    def reset(self) -> None:
        """Forget buffered bytes and hunt for ``SYNC`` (after a reconnection)."""
        self._buf.clear()
        self._marker = SYNC
        self.synced = False

    def feed(self, data: bytes | bytearray) -> list[Message]:
        self._buf += data
        messages: list[Message] = []
        while True:
            if not self.synced and not self._hunt():
                return messages
            if len(self._buf) < HEADER.size:
                return messages
            (length,) = HEADER.unpack_from(self._buf)
            if length > MAX_FRAME:
                self._lose_sync()
                continue
            end = HEADER.size + length
            if len(self._buf) < end:
                return messages
            message = _decode(bytes(self._buf[HEADER.size : end]))
            if message is None:
                self._lose_sync()
                continue
            del self._buf[:end]
            messages.append(message)

    def _hunt(self) -> bool:
        """Drop bytes up to and including the marker; False if it is not there yet."""
        found = self._buf.find(self._marker)
        if found < 0:
            # Keep a tail that may be the start of a marker split across reads.
            del self._buf[: max(0, len(self._buf) - (len(self._marker) - 1))]
            return False
        del self._buf[: found + len(self._marker)]
        self._marker = SYNC
        self.synced = True
        return True

    def _lose_sync(self) -> None:
        # Hunt from here: the marker may sit inside what looked like a frame.
        self._marker = SYNC
        self.synced = False
        self.resyncs += 1


def _decode(payload: bytes) -> Message | None:
    try:
        message = msgpack.unpackb(payload, raw=False)
    except Exception:  # msgpack raises several unrelated types for bad input
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    return message
