"""The protocol cores without I/O: frame codec, PTY multiplexer, lease table."""

from __future__ import annotations

import msgpack
import pytest

from agent.endpoints import pty_mux
from agent.endpoints.pty_mux import PtyMux, Scrollback
from agent.sandboxes.leases import LeaseRefused, LeaseTable
from chaser.wire import frames
from chaser.wire.frames import FrameError

pytestmark = pytest.mark.fast


def pack(**frame: object) -> bytes:
    return msgpack.packb(frame, use_bin_type=True)


def sent(actions: list[pty_mux.Action]) -> list[dict[str, object]]:
    return [frames.decode_any(a.frame) for a in actions if isinstance(a, pty_mux.Send)]


# -- frame codec ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("text", "invalid_frame"),
        (b"\xc1", "invalid_frame"),
        (msgpack.packb([1, 2]), "invalid_frame"),
        (pack(t="nope"), "invalid_frame"),
        (pack(t="in", ch=1, d="text, not bytes"), "invalid_frame"),
        (pack(t="resize", ch=1, cols=0, rows=10), "invalid_frame"),
        (pack(t="open", ch=1, extra=True), "invalid_frame"),
        (pack(t="open", ch=-1), "invalid_frame"),
        (pack(t="open", ch=1, env={"A=B": "x"}), "invalid_frame"),
        (pack(t="in", ch=1, d=b"x" * (frames.MAX_CLIENT_FRAME + 1)), "frame_too_large"),
    ],
)
def test_bad_pty_frames_are_refused(data: bytes | str, code: str) -> None:
    with pytest.raises(FrameError) as caught:
        frames.decode_pty(data)
    assert caught.value.code == code


def test_frames_round_trip() -> None:
    frame = frames.decode_pty(pack(t="open", ch=3, cmd=["top"], cols=120, rows=40, env={"A": "1"}))
    assert isinstance(frame, frames.Open) and frame.cmd == ["top"] and frame.cols == 120
    exec_frame = frames.decode_exec(pack(t="exec", cmd="echo hi", stdin=True, timeout_ms=5))
    assert isinstance(exec_frame, frames.Exec) and exec_frame.stdin
    with pytest.raises(FrameError):
        frames.decode_exec(pack(t="open", ch=1))  # a PTY frame on an exec stream
    assert frames.decode_any(frames.exited(3, ch=1)) == {"t": "exit", "code": 3, "ch": 1}
    assert frames.signal_number("int") == 2 and frames.signal_number("SIGTERM") == 15
    with pytest.raises(FrameError):
        frames.signal_number("NOPE")


# -- PTY multiplexer -----------------------------------------------------------


def test_open_input_resize_signal_exit() -> None:
    mux = PtyMux(max_channels=4)
    [action] = mux.receive(pack(t="open", ch=1, cols=100, rows=30))
    assert isinstance(action, pty_mux.OpenPty)
    assert action.argv == pty_mux.LOGIN_SHELL and action.env["TERM"] == pty_mux.DEFAULT_TERM
    assert frames.decode_any(mux.opened(1, "p1", 100, 30))["pty"] == "p1"
    assert mux.receive(pack(t="in", ch=1, d=b"ls\r")) == [pty_mux.WriteInput("p1", b"ls\r")]
    assert mux.receive(pack(t="resize", ch=1, cols=90, rows=20)) == [pty_mux.ResizePty("p1", 90, 20)]
    assert mux.receive(pack(t="signal", ch=1, sig="INT")) == [pty_mux.SignalPty("p1", 2)]
    out = mux.output("p1", b"x" * (frames.MAX_DATA_CHUNK + 5))
    assert [len(frames.decode_any(f)["d"]) for f in out] == [frames.MAX_DATA_CHUNK, 5]
    assert frames.decode_any(mux.exited("p1", 7) or b"") == {"t": "exit", "code": 7, "ch": 1}
    # The channel is free again, and the terminal no longer reaches this client.
    assert mux.output("p1", b"late") == []
    assert sent(mux.receive(pack(t="in", ch=1, d=b"x")))[0]["code"] == "unknown_channel"
    assert isinstance(mux.receive(pack(t="open", ch=1, cmd="sh"))[0], pty_mux.OpenPty)


def test_channel_rules() -> None:
    mux = PtyMux(max_channels=2)
    mux.receive(pack(t="open", ch=1))
    assert sent(mux.receive(pack(t="open", ch=1)))[0] == {
        "t": "error", "code": "channel_in_use", "message": "channel 1 is already in use", "ch": 1,
    }  # fmt: skip
    mux.receive(pack(t="attach", ch=2, pty="p9"))
    assert sent(mux.receive(pack(t="open", ch=3)))[0]["code"] == "too_many_channels"
    assert frames.decode_any(mux.open_failed(2, "pty_not_found", "no such terminal"))["ch"] == 2
    mux.opened(1, "p1", 80, 24)
    assert sent(mux.receive(pack(t="attach", ch=5, pty="p1")))[0]["code"] == "already_attached"
    assert mux.receive(pack(t="detach", ch=1)) == [pty_mux.DetachPty("p1")]
    assert mux.attached == []
    assert sent(mux.receive(pack(t="ping"))) == [{"t": "pong"}]
    assert sent(mux.receive(b"garbage"))[0]["code"] == "invalid_frame"


def test_two_connections_share_a_terminal() -> None:
    first, second = PtyMux(4), PtyMux(4)
    first.opened(1, "p1", 80, 24)
    second.receive(pack(t="attach", ch=9, pty="p1"))
    second.opened(9, "p1", 80, 24)
    assert frames.decode_any(first.output("p1", b"hi")[0])["ch"] == 1
    assert frames.decode_any(second.output("p1", b"hi")[0])["ch"] == 9
    assert frames.decode_any(second.dropped("p1", "too_slow", "fell behind") or b"")["code"] == "too_slow"
    assert second.output("p1", b"more") == [] and first.output("p1", b"more")


def test_scrollback_is_bounded() -> None:
    scroll = Scrollback(limit=10)
    scroll.append(b"0123456789")
    scroll.append(b"abc")
    assert scroll.snapshot() == b"3456789abc"


# -- lease table ---------------------------------------------------------------


def test_leases_count_and_close() -> None:
    table = LeaseTable(keepalive_timeout=30, idle_timeout=600)
    a = table.open("s1", "pty", now=0)
    b = table.open("s1", "exec", now=1)
    table.open("s2", "tunnel", now=1)
    assert table.count("s1") == 2 and table.count("s2") == 1
    assert table.close(a.id) is a and table.close(a.id) is None
    assert [lease.id for lease in table.of("s1")] == [b.id]
    table.forget("s1")
    assert table.count("s1") == 0 and table.get(b.id) is None


def test_vanished_client_expires_on_missed_keepalive() -> None:
    table = LeaseTable(keepalive_timeout=30, idle_timeout=600)
    lease = table.open("s1", "pty", now=0)
    table.seen(lease.id, now=25)
    assert table.expired(now=50) == []
    [due] = table.expired(now=56)
    assert due is lease and "keepalive" in (lease.ended_because or "")
    assert table.expired(now=57) == []  # reported once
    assert table.count("s1") == 1  # until the connection is really closed
    table.close(lease.id)
    assert table.count("s1") == 0


def test_pings_alone_do_not_hold_a_lease_for_ever() -> None:
    table = LeaseTable(keepalive_timeout=30, idle_timeout=100)
    lease = table.open("s1", "pty", now=0)
    for t in range(10, 101, 10):
        table.seen(lease.id, now=t)
    assert table.expired(now=100) == []
    table.seen(lease.id, now=101)
    [due] = table.expired(now=101)
    assert "no traffic" in (due.ended_because or "")


def test_traffic_keeps_a_lease_and_counts_as_activity() -> None:
    table = LeaseTable(keepalive_timeout=30, idle_timeout=100)
    lease = table.open("s1", "exec", now=0)
    for t in range(20, 400, 20):
        table.active(lease.id, now=t)
    assert table.expired(now=390) == []
    assert table.last_activity("s1") == 380
    table.touch("s1", now=395)
    assert table.last_activity("s1") == 395


def test_drain_refuses_new_leases_and_marks_open_ones() -> None:
    table = LeaseTable(keepalive_timeout=30, idle_timeout=100)
    lease = table.open("s1", "pty", now=0)
    assert table.drain("s1", "session terminated") == [lease]
    assert lease.ended_because == "session terminated"
    with pytest.raises(LeaseRefused):
        table.open("s1", "pty", now=1)
    table.undrain("s1")
    table.open("s1", "pty", now=2)
