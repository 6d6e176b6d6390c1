"""The guest end of a guest channel, scripted by tests: in-memory streams, no VM."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from agent.runtimes.base import ProcessSpec
from agent.runtimes.channel.guest_channel import GuestChannel, GuestProcess
from vmimages.guest.protocol import FrameDecoder, Message, encode, encode_sync

SANDBOX = "sandbox-under-attack"
LOST = 128 + signal.SIGKILL


class Guest:
    """The guest's end, scripted by a test: it answers the hello, then reads (or not) and sends."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.received: list[Message] = []
        self.answered = trio.Event()

    async def answer_hello(self, *, keep_reading: bool) -> None:
        while True:
            data = await self.stream.receive_some()
            if not data:
                return
            hellos = [m for m in self.decoder.feed(data) if m["type"] == "hello"]
            if hellos:
                break
        await self.stream.send_all(encode_sync({"type": "hello", "nonce": hellos[0]["nonce"]}))
        self.answered.set()
        while keep_reading:
            data = await self.stream.receive_some()
            if not data:
                return
            self.received += self.decoder.feed(data)

    async def send(self, *messages: Message) -> None:
        await self.stream.send_all(b"".join(encode(m) for m in messages))


@asynccontextmanager
async def connected(*, guest_reads: bool = True) -> AsyncIterator[tuple[GuestChannel, Guest]]:
    """A served channel and its scripted guest; ``serve`` must not raise, whatever the guest does."""
    host_end, guest_end = trio.testing.lockstep_stream_pair()
    channel = GuestChannel(host_end, SANDBOX)
    guest = Guest(guest_end)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: guest.answer_hello(keep_reading=guest_reads))
        await nursery.start(lambda task_status: channel.serve(SANDBOX, reconnecting=False, task_status=task_status))
        await guest.answered.wait()
        yield channel, guest
        channel.close("the test is over")
        nursery.cancel_scope.cancel()


async def closed(channel: GuestChannel) -> None:
    with trio.fail_after(5):
        while not channel.closed:
            await trio.sleep(0.01)


def warned(records: list[logging.LogRecord], *words: str) -> bool:
    """Whether the channel logged a warning about this sandbox that says all ``words``."""
    return any(
        r.levelno == logging.WARNING
        and getattr(r, "session_id", None) == SANDBOX
        and all(w in r.getMessage() for w in words)
        for r in records
    )


async def spawned(channel: GuestChannel, *, merge_stderr: bool = False, stdin: bool = False) -> GuestProcess:
    return await channel.spawn(ProcessSpec(argv=["cat"], env={}, merge_stderr=merge_stderr, stdin=stdin))
