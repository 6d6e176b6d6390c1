"""A hostile guest against the host end of the guest channel: in-memory streams, no VM.

Whatever runs as root in a guest can write to the channel, so every named
attack here must end that channel with a logged reason (or be contained)
and never raise out of ``serve``, which runs in the runtime's nursery with
every other sandbox's channel.
"""

from __future__ import annotations

import contextlib
import logging
import tracemalloc

import pytest
import trio

from agent.runtimes.base import Busy, ProcessSpec
from agent.runtimes.channel.guest_channel import MAX_OPEN, GuestChannel, GuestProcess
from tests.fake_guest import LOST, closed, connected, spawned, warned
from vmimages.guest.protocol import MAX_FRAME, SYNC, WINDOW, Message, encode, encode_sync

pytestmark = pytest.mark.fast


async def assert_lost(process: GuestProcess) -> None:
    """The process ended with the channel: its output reads EOF and it was "killed"."""
    assert await process.wait() == LOST
    assert await process.stdout.receive_some() == b""


# Guest messages that break the protocol, each about process 1 (the first spawned).
MALFORMED = {
    "data not bytes (a huge int)": {"type": "output", "id": 1, "fd": 1, "data": 1 << 40},
    "data not bytes (a string)": {"type": "output", "id": 1, "fd": 1, "data": "text"},
    "no data": {"type": "output", "id": 1, "fd": 1},
    "empty data": {"type": "output", "id": 1, "fd": 1, "data": b""},
    "fd not an int": {"type": "output", "id": 1, "fd": "x", "data": b"x"},
    "fd out of range": {"type": "output", "id": 1, "fd": 7, "data": b"x"},
    "fd merged away": {"type": "eof", "id": 2, "fd": 2},
    "id unhashable": {"type": "output", "id": [1], "fd": 1, "data": b"x"},
    "id a bool": {"type": "exit", "id": True, "code": 0},
    "id never given out": {"type": "output", "id": 999, "fd": 1, "data": b"x"},
    "pid not an int": {"type": "started", "id": 1, "pid": "x"},
    "pid negative": {"type": "started", "id": 1, "pid": -4},
    "code not an int": {"type": "exit", "id": 1, "code": "x"},
    "code a float": {"type": "exit", "id": 1, "code": 1.5},
    "code out of range": {"type": "exit", "id": 1, "code": -5},
    "credit not an int": {"type": "input_credit", "id": 3, "bytes": "x"},
    "credit never owed": {"type": "input_credit", "id": 3, "bytes": 1 << 62},
    "credit without input": {"type": "input_credit", "id": 1, "bytes": 0},
    "reply error not a string": {"type": "reply", "id": 1, "error": 5},
    "reply id never given out": {"type": "reply", "id": 999, "error": None},
    "unknown type": {"type": "launch_missiles", "id": 1},
}


@pytest.mark.parametrize("message", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_message_ends_the_channel(
    message: Message, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with connected() as (channel, guest):
        first = await spawned(channel)
        await spawned(channel, merge_stderr=True)
        await spawned(channel, stdin=True)
        await guest.send(message)
        await closed(channel)
    assert warned(caplog.records, "protocol")
    await assert_lost(first)


async def test_a_second_exit_ends_the_channel(autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture) -> None:
    async with connected() as (channel, guest):
        process = await spawned(channel)
        await guest.send({"type": "exit", "id": process.id, "code": 0}, {"type": "exit", "id": process.id, "code": 3})
        await closed(channel)
    assert warned(caplog.records, "protocol") and await process.wait() == 0


async def test_output_after_eof_ends_the_channel(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with connected() as (channel, guest):
        process = await spawned(channel)
        await guest.send(
            {"type": "eof", "id": process.id, "fd": 1}, {"type": "output", "id": process.id, "fd": 1, "data": b"x"}
        )
        await closed(channel)
    assert warned(caplog.records, "protocol")


async def test_output_beyond_the_window_ends_the_channel(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Output nobody reads stops at WINDOW bytes: the guest may not send more until credited."""
    chunk = b"x" * (64 << 10)
    async with connected() as (channel, guest):
        process = await spawned(channel)
        tracemalloc.start()
        try:
            for _ in range(64):  # 16 windows' worth
                if channel.closed:
                    break
                await guest.send({"type": "output", "id": process.id, "fd": 1, "data": chunk})
            await closed(channel)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert warned(caplog.records, "window")
    assert peak < 4 * WINDOW


async def test_a_guest_that_keeps_to_its_window_is_never_cut_off(autojump_clock: trio.abc.Clock) -> None:
    """A conforming guest sends WINDOW bytes ahead, then only as much as it was credited back."""
    total = 6 * WINDOW
    async with connected() as (channel, guest), trio.open_nursery() as nursery:
        process = await spawned(channel)

        async def produce() -> None:
            sent = 0
            while sent < total:
                credited = sum(m["bytes"] for m in guest.received if m["type"] == "credit")
                room = min(WINDOW + credited - sent, 65536, total - sent)
                if room > 0:
                    await guest.send({"type": "output", "id": process.id, "fd": 1, "data": b"x" * room})
                    sent += room
                else:
                    await trio.sleep(0.001)
            await guest.send({"type": "eof", "id": process.id, "fd": 1})

        nursery.start_soon(produce)
        got = 0
        while chunk := await process.stdout.receive_some(10_000):
            got += len(chunk)
        assert got == total and not channel.closed


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x01\xc1",  # a frame holding malformed msgpack
        (MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 100,  # a length over the limit
        b"\x00\x00\x00\x03\x93\x01\x02",  # an array, not a map
        b"certainly not msgpack " * 100,
    ],
    ids=["bad msgpack", "huge length", "not a map", "text"],
)
async def test_garbage_after_the_hello_ends_the_channel(
    garbage: bytes, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with connected() as (channel, guest):
        process = await spawned(channel)
        await guest.stream.send_all(garbage + encode_sync({"type": "exit", "id": process.id, "code": 0}))
        await closed(channel)
    assert warned(caplog.records, "protocol")
    await assert_lost(process)


async def test_answers_to_repeated_hellos_are_not_garbage(autojump_clock: trio.abc.Clock) -> None:
    """A guest answers every hello the host repeated while it booted, each answer after SYNC."""
    async with connected() as (channel, guest):
        process = await spawned(channel)
        answer = encode_sync({"type": "hello", "nonce": b"n" * 16})
        await guest.stream.send_all(answer + answer[:5])
        await trio.sleep(1)
        await guest.stream.send_all(answer[5:] + SYNC + encode({"type": "exit", "id": process.id, "code": 4}))
        assert await process.wait() == 4
        assert not channel.closed


async def test_frames_for_released_processes_are_ignored(autojump_clock: trio.abc.Clock) -> None:
    """Output racing the host's close is normal; a flood of it costs nothing."""
    async with connected() as (channel, guest):
        process = await spawned(channel)
        await process.aclose()
        tracemalloc.start()
        try:
            for _ in range(200):
                await guest.send({"type": "output", "id": process.id, "fd": 1, "data": b"z" * 60_000})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert not channel.closed
    assert peak < 4 * WINDOW


async def test_a_guest_that_stops_reading_ends_the_channel(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """What the host sends without waiting (requests, kills, credit) stops at a bound: the channel is given up."""
    async with connected(guest_reads=False) as (channel, _guest):
        processes = []
        while not channel.closed:  # requests of 1 MiB each, never read
            processes.append(await channel.spawn(ProcessSpec(argv=["x" * (MAX_FRAME // 2)], env={})))
            assert len(processes) < 100
    assert warned(caplog.records, "reading")
    for process in processes:
        await assert_lost(process)


async def test_input_credited_but_never_read_stays_bounded(autojump_clock: trio.abc.Clock) -> None:
    """A guest crediting input it never reads cannot make the host queue it without bound."""
    data = b"i" * (64 << 20)
    async with connected(guest_reads=False) as (channel, guest), trio.open_nursery() as nursery:
        process = await spawned(channel, stdin=True)
        stdin = process.stdin
        assert stdin is not None

        async def write() -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                await stdin.send_all(data)

        tracemalloc.start()
        try:
            nursery.start_soon(write)
            for _ in range(len(data) >> 16):
                if channel.closed:
                    break
                await guest.send({"type": "input_credit", "id": process.id, "bytes": 1 << 16})
                await trio.sleep(0.001)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        nursery.cancel_scope.cancel()
    assert peak < 24 << 20


async def test_a_bug_in_the_host_end_ends_only_its_channel(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever fails in ``serve`` stays out of the runtime's nursery, where every sandbox's channel runs."""

    def broken(self: GuestChannel, frame: object) -> None:
        raise RuntimeError("a bug")

    async with connected() as (channel, guest):
        process = await spawned(channel)
        monkeypatch.setattr(GuestChannel, "_dispatch", broken)
        await guest.send({"type": "exit", "id": process.id, "code": 0})
        await closed(channel)
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    await assert_lost(process)


async def test_one_sandbox_may_open_only_so_much_at_once() -> None:
    """Past MAX_OPEN open processes the channel answers Busy (a 429), and takes work again once one is released."""
    async with connected() as (channel, _guest):
        opened = [await spawned(channel) for _ in range(MAX_OPEN)]
        with pytest.raises(Busy):
            await spawned(channel)
        with pytest.raises(Busy):
            await channel.request({"type": "sync"})
        await opened[0].aclose()
        await spawned(channel)
        assert not channel.closed
