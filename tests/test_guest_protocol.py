"""The guest channel's framing, fed bytes: no VM, no sockets."""

from __future__ import annotations

import msgpack
import pytest

from vmimages.guest.protocol import MAX_FRAME, SYNC, FrameDecoder, encode, encode_sync, flush_padding

pytestmark = pytest.mark.fast

HELLO = {"type": "hello", "nonce": b"\x01\x02"}
EXEC = {"type": "exec", "id": 7, "argv": ["echo", "hi"], "env": {"A": "b"}, "cwd": None}
OUTPUT = {"type": "output", "id": 7, "fd": 1, "data": bytes(range(256)) * 40}


def test_a_decoder_ignores_everything_before_sync() -> None:
    decoder = FrameDecoder()
    assert not decoder.synced
    assert decoder.feed(encode(EXEC)) == []  # not synced yet: a frame without SYNC is skipped
    assert decoder.feed(b"stale bytes" + encode_sync(HELLO) + encode(EXEC)) == [HELLO, EXEC]


def test_bytes_split_anywhere_decode_the_same() -> None:
    stream = b"junk" + encode_sync(HELLO) + encode(EXEC) + encode(OUTPUT)
    for cut in range(1, len(stream), 97):
        decoder = FrameDecoder()
        messages = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert messages == [HELLO, EXEC, OUTPUT], cut
    decoder = FrameDecoder()
    one_by_one = [m for i in range(len(stream)) for m in decoder.feed(stream[i : i + 1])]
    assert one_by_one == [HELLO, EXEC, OUTPUT]


@pytest.mark.parametrize("kept", [1, 3, 4, 5, 200, 10_000])
def test_flush_padding_ends_any_half_frame(kept: int) -> None:
    """Half a frame from an earlier session would swallow the new hello; padding ends it."""
    big = {"type": "exec", "id": 1, "argv": ["x" * (MAX_FRAME - 100)], "env": {}}
    decoder = FrameDecoder()
    assert decoder.feed(encode_sync(HELLO)) == [HELLO]
    messages = decoder.feed(encode(big)[:kept] + encode_sync(HELLO))  # usually swallowed
    messages += decoder.feed(flush_padding() + encode_sync(HELLO) + encode(EXEC))
    # The swallowed hello may come back out (it is found inside the broken
    # frame); the stale frame never does.
    assert messages[-2:] == [HELLO, EXEC] and set(map(str, messages)) <= {str(HELLO), str(EXEC)}


def test_host_skips_to_the_answer_to_its_own_hello() -> None:
    """Stale answers to earlier hellos, even complete ones, are not the start of the session."""
    answer = encode_sync({"type": "hello", "nonce": b"fresh"})
    decoder = FrameDecoder(first=answer)
    stale = encode_sync({"type": "hello", "nonce": b"stale"}) + encode(OUTPUT)[:100]
    assert decoder.feed(stale + answer[:9]) == []
    assert decoder.feed(answer[9:] + encode(EXEC)) == [EXEC]
    # Once synchronised it hunts for SYNC like any decoder.
    assert decoder.feed(b"\xff" * 10 + encode_sync(HELLO)) == [HELLO]


def test_sync_where_a_header_is_expected_is_found() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_sync(HELLO))
    assert decoder.feed(encode_sync(EXEC)) == [EXEC]
    assert decoder.resyncs == 1


@pytest.mark.parametrize(
    "payload",
    [b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"no": "type"}), msgpack.packb({"type": 3})],
)
def test_malformed_frames_are_dropped_not_delivered(payload: bytes) -> None:
    decoder = FrameDecoder()
    frame = len(payload).to_bytes(4, "big") + payload
    assert decoder.feed(SYNC + frame + encode_sync(EXEC)) == [EXEC]
    assert decoder.resyncs == 1


def test_oversized_frames_are_refused_both_ways() -> None:
    with pytest.raises(ValueError, match="frame limit"):
        encode({"type": "output", "data": b"x" * (MAX_FRAME + 1)})
    decoder = FrameDecoder()
    assert decoder.feed(SYNC + (MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 100 + encode_sync(HELLO)) == [HELLO]


def test_garbage_without_sync_keeps_only_a_possible_marker_prefix() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"z" * 100_000 + SYNC[:5]) == []
    assert decoder.feed(SYNC[5:] + encode(EXEC)) == [EXEC]
