"""The exec output cap keeps the tail, where failing builds say why."""

from __future__ import annotations

import pytest

from agent.runtimes.execution import OutputTail

pytestmark = pytest.mark.fast


def test_under_the_limit_keeps_everything() -> None:
    tail = OutputTail(10)
    tail.write(b"abc")
    tail.write(b"def")
    assert tail.text() == "abcdef" and not tail.truncated


def test_over_the_limit_keeps_the_last_bytes() -> None:
    tail = OutputTail(5)
    for chunk in (b"hello ", b"wor", b"ld!"):
        tail.write(chunk)
    assert tail.text() == "orld!" and tail.truncated


def test_a_cut_multibyte_character_does_not_break_decoding() -> None:
    tail = OutputTail(4)
    tail.write("héllo".encode())  # the cut lands inside nothing, or inside é
    assert tail.text().endswith("llo")
