"""The one writer of an API error's bytes, for each way the servers answer.

The Quart apps, the agent's bare-ASGI endpoints and the byte relay (h11)
each send errors; they all take status, headers and body from here, so the
JSON shape (``ApiError.to_json``, the wire's) is written in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from chaser.wire import errors

CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    body: bytes

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(self.body)).encode())]


def error_answer(error: errors.ApiError) -> ErrorAnswer:
    return ErrorAnswer(error.status, json.dumps(error.to_json()).encode())
