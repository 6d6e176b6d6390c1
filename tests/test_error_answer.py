"""Every server writes an API error the same way: one writer, the wire's shape."""

from __future__ import annotations

import json

import pytest

from chaser.wire import errors
from serving.error_answer import error_answer

pytestmark = pytest.mark.fast


def test_an_error_is_written_as_the_wire_shape_with_its_status() -> None:
    answer = error_answer(errors.Conflict("it is paused", code="session_not_running", details={"status": "paused"}))
    assert answer.status == 409
    assert json.loads(answer.body) == {
        "error": {"code": "session_not_running", "message": "it is paused", "details": {"status": "paused"}}
    }
    length = str(len(answer.body)).encode()
    assert answer.headers == [(b"content-type", b"application/json"), (b"content-length", length)]


def test_the_sdk_reads_back_what_the_servers_write() -> None:
    answer = error_answer(errors.NotFound("no such session", code="session_not_found"))
    again = errors.from_response(answer.status, json.loads(answer.body))
    assert (type(again), again.code, again.message) == (errors.NotFound, "session_not_found", "no such session")
