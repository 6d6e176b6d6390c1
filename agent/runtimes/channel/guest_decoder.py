"""The host's reading of a guest channel: skip to the answer to its hello, then forgive nothing.

``protocol.FrameDecoder`` forgives: a malformed frame sends it hunting for
the next ``SYNC``, which a guest needs when a host went away mid-frame. The
host needs that only before its session starts, which it knows exactly: at
the answer to its own hello (stale bytes before it are skipped, as
``FrameDecoder`` skips them). After that, a malformed frame is no leftover
but a guest breaking the protocol, and raises ``ProtocolViolation``. The one
thing still skipped is ``SYNC`` before a frame: the guest answers each hello
the host repeated while it booted, every answer preceded by ``SYNC``.

Memory stays bounded: hunting keeps only what may be the start of the
answer, and a frame is waited for only up to ``MAX_FRAME`` bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgpack

from agent.runtimes.channel.guest_frames import ProtocolViolation, describe
from vmimages.guest.protocol import HEADER, MAX_FRAME, SYNC, Message


class GuestDecoder:
    """Bytes in, messages out (see the module docstring); ``answer`` is the exact frame answering the hello."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._buf = bytearray()
        self.synced = False

    def feed(self, data: bytes | bytearray) -> Iterator[Message]:
        """Take ``data`` (``synced`` tells at once if it held the answer); iterate for the messages.

        Iterating raises ``ProtocolViolation`` where the first malformed frame
        is, so the well-formed frames before it are still handled.
        """
        self._buf += data
        if not self.synced:
            self._hunt()
        return self._messages()

    def _hunt(self) -> None:
        found = self._buf.find(self._answer)
        if found < 0:
            # Keep a tail that may be the start of the answer, split across reads.
            del self._buf[: max(0, len(self._buf) - (len(self._answer) - 1))]
            return
        del self._buf[: found + len(self._answer)]
        self.synced = True

    def _messages(self) -> Iterator[Message]:
        while self.synced:
            head = bytes(self._buf[: len(SYNC)])
            if SYNC.startswith(head):  # SYNC, or what may become it (or nothing yet)
                if len(head) < len(SYNC):
                    return
                del self._buf[: len(SYNC)]
                continue
            if len(self._buf) < HEADER.size:
                return
            (length,) = HEADER.unpack_from(self._buf)
            if length > MAX_FRAME:
                raise ProtocolViolation(f"a frame of {length} bytes, over the {MAX_FRAME}-byte limit")
            end = HEADER.size + length
            if len(self._buf) < end:
                return
            payload = bytes(self._buf[HEADER.size : end])
            del self._buf[:end]
            yield _decode(payload)


def _decode(payload: bytes) -> Message:
    try:
        message = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolViolation(f"a frame that is not msgpack ({exc})") from None
    if not isinstance(message, dict) or type(message.get("type")) is not str:
        raise ProtocolViolation(f"a frame that is not a map with a string type: {describe(message)}")
    return message
