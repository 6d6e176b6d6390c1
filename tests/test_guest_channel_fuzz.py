"""The host end of the guest channel fed random and malicious guest traffic (Hypothesis, no VM).

Whatever the guest sends: nothing raises out of ``serve``; a channel that
ends says why in a warning and takes its processes with it; memory stays
bounded; what is certainly malformed ends the channel. And a guest that
keeps to the protocol, however it cuts its output, is never cut off.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.runtimes.base import ProcessSpec, SandboxGone
from agent.runtimes.channel.guest_channel import GuestChannel, GuestProcess
from tests.fake_guest import Guest, connected, spawned, warned
from vmimages.guest.protocol import HEADER, MAX_FRAME, SYNC, WINDOW, Message, encode

pytestmark = pytest.mark.fast

CHUNK = 64 << 10
REQUEST = 1 << 20
# Virtual seconds (the clock jumps when all is idle) before an example counts as stuck.
TIMEOUT = 600
# The host's processes: 1 (stdout and stderr, stdout read), 2 (merged), 3 (with stdin).
IDS = (1, 2, 3)
# The most output a conforming guest puts in one frame: what it reads at once
# (512 KiB); a whole window of data and its header would be over MAX_FRAME.
MAX_PIECE = 512 << 10
# Streams: 1 and 2 of processes 1 and 3, 1 of process 2.
STREAMS = 5
TYPES = ["hello", "started", "output", "eof", "input_credit", "exit", "bye", "reply"]


@dataclass(frozen=True)
class Action:
    """Bytes the guest sends; ``bad``: certainly a violation if the stream is at a frame boundary."""

    data: bytes
    bad: bool
    aligned: bool  # the stream is at a frame boundary afterwards


EDGE_INTS = [0, 1, 2, 3, 4, 255, 256, WINDOW, WINDOW + 1, 1 << 22, (1 << 22) + 1, 1 << 40, (1 << 63) - 1, -1]
anything = st.one_of(
    st.sampled_from(EDGE_INTS),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.binary(max_size=64),
    st.text(max_size=16),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)
FIELDS = {
    "id": st.sampled_from([*IDS, 4]),
    "fd": st.sampled_from([1, 2]),
    "pid": st.integers(1, 1 << 22),
    "code": st.integers(0, 255),
    "bytes": st.integers(0, CHUNK),
    "data": st.binary(min_size=1, max_size=CHUNK),
    "error": st.one_of(st.none(), st.text(max_size=20)),
    "nonce": st.binary(max_size=16),
}


@st.composite
def messages(draw: st.DrawFn) -> Action:
    """A message with each field plausible, absent, or anything at all."""
    kind = draw(st.one_of(st.sampled_from(TYPES), st.text(max_size=8)))
    message: Message = {"type": kind}
    for key, plausible in FIELDS.items():
        choice = draw(st.sampled_from(["plausible", "plausible", "absent", "anything"]))
        if choice != "absent":
            message[key] = draw(plausible if choice == "plausible" else anything)
    return Action(encode(message), bad=kind not in TYPES, aligned=True)


@st.composite
def floods(draw: st.DrawFn) -> Action:
    """Output in 64 KiB frames, perhaps far past the window: certainly bad on a stream nobody reads."""
    process = draw(st.sampled_from(IDS))
    chunks = draw(st.integers(1, 24))
    frame = encode({"type": "output", "id": process, "fd": 1, "data": bytes(CHUNK)})
    return Action(frame * chunks, bad=process != 1 and chunks * CHUNK > WINDOW, aligned=True)


def impossible_header(data: bytes) -> bool:
    """Whether ``data``, where a frame starts, certainly breaks the protocol: a length over
    MAX_FRAME (any first byte but zero) that is not the start of SYNC either."""
    return len(data) >= HEADER.size and data[0] != 0 and not SYNC.startswith(data[: len(SYNC)])


@st.composite
def garbage(draw: st.DrawFn) -> Action:
    """Random bytes."""
    data = draw(st.binary(min_size=1, max_size=256))
    return Action(data, bad=impossible_header(data), aligned=False)


@st.composite
def lengths(draw: st.DrawFn) -> Action:
    """A header claiming a huge frame (up to 4 GiB), then a little of it."""
    length = draw(st.integers(MAX_FRAME + 1, (1 << 32) - 1))
    data = HEADER.pack(length) + b"\x00" * draw(st.integers(0, 64))
    return Action(data, bad=impossible_header(data), aligned=False)


def resync() -> Action:
    """What a conforming guest may send: the answer to a repeated hello, after SYNC."""
    return Action(SYNC + encode({"type": "hello", "nonce": b"n" * 16}), bad=False, aligned=True)


actions = st.lists(
    st.one_of(messages(), messages(), messages(), floods(), garbage(), lengths(), st.just(resync())),
    min_size=1,
    max_size=12,
)


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def recorded() -> Iterator[list[logging.LogRecord]]:
    """The channel's warnings while in the block (caplog is per test, not per Hypothesis example)."""
    recorder = _Recorder()
    logger = logging.getLogger("agent.runtimes.channel.guest_channel")
    logger.addHandler(recorder)
    try:
        yield recorder.records
    finally:
        logger.removeHandler(recorder)


def certainly_bad(sequence: list[Action]) -> bool:
    """Whether an action certainly breaks the protocol while the stream is still at a frame boundary."""
    for action in sequence:
        if action.bad:
            return True
        if not action.aligned:
            return False
    return False


# What the host may hold: a window of output per stream; the 1 MiB of input
# the test writes, and as much queued for the guest (credited ahead by it);
# frames being read and decoded; 1 MiB for everything else (tasks, logs).
INPUT = 1 << 20
MEMORY_BOUND = STREAMS * WINDOW + 2 * INPUT + 4 * CHUNK + (1 << 20)


async def drive(sequence: list[Action], guest_reads: bool, requests: int) -> None:
    """Play ``sequence`` as the guest; one that does not read also faces ``requests`` of 1 MiB."""
    pressed = 0 if guest_reads else requests
    with recorded() as records, trio.fail_after(TIMEOUT):
        async with connected(guest_reads=guest_reads) as (channel, guest), trio.open_nursery() as host:
            processes = [
                await spawned(channel),
                await spawned(channel, merge_stderr=True),
                await spawned(channel, stdin=True),
            ]
            tracemalloc.start()
            try:
                host.start_soon(read_all, processes[0])
                host.start_soon(write_input, processes[2])
                host.start_soon(press, channel, pressed)
                await act(guest, sequence)
                await trio.sleep(1)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            # Requests wait in the outbox, up to its limit, and one in the writer's hands.
            assert peak < MEMORY_BOUND + (channel.outbox.limit + REQUEST if pressed else 0), peak
            event("closed" if channel.closed else "open")
            if certainly_bad(sequence) or pressed * REQUEST > channel.outbox.limit + REQUEST:
                assert channel.closed
            if channel.closed:
                assert warned(records), "a channel the guest ended says why"
                await assert_ended(processes)
            host.cancel_scope.cancel()
    assert channel.closed  # closed by the test now, if not before


async def act(guest: Guest, sequence: list[Action]) -> None:
    for action in sequence:
        try:
            await guest.stream.send_all(action.data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the host hung up


async def press(channel: GuestChannel, requests: int) -> None:
    """Requests the host sends without waiting (as it sends a kill): they must not pile up without bound."""
    with contextlib.suppress(SandboxGone):
        for _ in range(requests):
            await channel.spawn(ProcessSpec(argv=["x" * (REQUEST - 100)], env={}))


async def read_all(process: GuestProcess) -> None:
    while await process.stdout.receive_some(CHUNK // 3):
        await trio.sleep(0.001)


async def write_input(process: GuestProcess) -> None:
    assert process.stdin is not None
    with contextlib.suppress(trio.BrokenResourceError):
        await process.stdin.send_all(bytes(INPUT))


async def assert_ended(processes: list[GuestProcess]) -> None:
    with trio.fail_after(1):
        for process in processes:
            await process.wait()
            while await process.stdout.receive_some():
                pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sequence=actions, guest_reads=st.booleans(), requests=st.integers(0, 40))
def test_random_guest_traffic_is_contained(sequence: list[Action], guest_reads: bool, requests: int) -> None:
    trio.run(drive, sequence, guest_reads, requests, clock=trio.testing.MockClock(autojump_threshold=0))


# -- a conforming guest ---------------------------------------------------------


async def conform(cuts: list[int], reads: list[int], code: int) -> None:
    """The guest sends ``sum(cuts)`` bytes in pieces of ``cuts``, split further where its credit runs out."""
    payload = bytes(i % 251 for i in range(sum(cuts)))
    with trio.fail_after(TIMEOUT):
        await conformed(payload, cuts, reads, code)


async def conformed(payload: bytes, cuts: list[int], reads: list[int], code: int) -> None:
    async with connected() as (channel, guest), trio.open_nursery() as nursery:
        process = await spawned(channel)

        async def produce() -> None:
            sent = 0
            for end in itertools.accumulate(cuts):
                while sent < end:
                    room = WINDOW + sum(m["bytes"] for m in guest.received if m["type"] == "credit") - sent
                    if room <= 0:
                        await trio.sleep(0.001)
                        continue
                    piece = payload[sent : min(end, sent + room, sent + MAX_PIECE)]
                    await guest.send({"type": "output", "id": process.id, "fd": 1, "data": piece})
                    sent += len(piece)
            await guest.send(
                {"type": "eof", "id": process.id, "fd": 1}, {"type": "exit", "id": process.id, "code": code}
            )

        nursery.start_soon(produce)
        got = bytearray()
        for size in itertools.cycle(reads):
            chunk = await process.stdout.receive_some(size)
            if not chunk:
                break
            got += chunk
        assert bytes(got) == payload
        assert await process.wait() == code
        assert not channel.closed


@settings(max_examples=60, deadline=None)
@given(
    # Pieces up to a whole credit window (its edges are where a guest gets cut
    # off wrongly); reads from a terminal's 4 KiB up: megabytes read a byte
    # at a time would take this test minutes and show nothing more.
    cuts=st.lists(st.integers(1, WINDOW), min_size=1, max_size=6),
    reads=st.lists(st.integers(4096, 3 * CHUNK), min_size=1, max_size=5),
    code=st.integers(0, 255),
)
def test_a_conforming_guest_is_never_cut_off(cuts: list[int], reads: list[int], code: int) -> None:
    trio.run(conform, cuts, reads, code, clock=trio.testing.MockClock(autojump_threshold=0))
