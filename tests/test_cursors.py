"""The one cursor codec every list uses: round trips, and refuses what it did not write."""

from __future__ import annotations

import base64

import pytest

from chaser.wire import errors
from scheduler.pagination import decode_cursor, encode_cursor
from scheduler.workspace_lookup import check_name

pytestmark = pytest.mark.fast


def test_round_trip() -> None:
    cursor = encode_cursor(1_700_000_000.25, "0b7c")
    assert decode_cursor(cursor, float, str) == (1_700_000_000.25, "0b7c")
    assert decode_cursor(encode_cursor(42), int) == (42,)


def test_a_converter_checks_each_part() -> None:
    assert decode_cursor(encode_cursor("my-project"), check_name) == ("my-project",)
    with pytest.raises(errors.InvalidInput):
        decode_cursor(encode_cursor("../etc"), check_name)


@pytest.mark.parametrize(
    "cursor",
    [
        "%%%",
        "bm90IGpzb24=",  # base64 of text that is not JSON
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),  # not a list
        encode_cursor(1.0),  # too short
        encode_cursor(1.0, "x", "y"),  # too long
        encode_cursor("not a number", "x"),
        encode_cursor([1], "x"),
    ],
)
def test_refuses_what_it_did_not_write(cursor: str) -> None:
    with pytest.raises(errors.InvalidInput) as raised:
        decode_cursor(cursor, float, str)
    assert raised.value.code == "invalid_cursor"
