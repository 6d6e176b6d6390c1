"""Bare ASGI for the agent's streaming endpoints, where Quart would buffer.

Quart reads a request body, and a WebSocket's incoming messages, into
unbounded buffers as fast as the client sends; these endpoints instead take
one ASGI message at a time, so hypercorn's bounded queue pushes back on a
client that sends faster than the sandbox takes. Errors keep the shared
JSON shape: an HTTP error response, or (for a WebSocket not yet accepted) a
denial response with the same body, so a client sees a status and a reason
instead of a bare refused handshake.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from chaser.wire import errors
from serving.error_answer import error_answer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_JSON_BODY = 64 * 1024


def query(scope: Scope, allowed: Iterable[str]) -> dict[str, str]:
    """The query string as a dict; unknown or repeated keys are refused."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    names = [k for k, _ in pairs]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise errors.InvalidInput(f"unknown query parameter {unknown[0]!r}", code="invalid_request")
    if len(names) != len(set(names)):
        raise errors.InvalidInput("a query parameter is repeated", code="invalid_request")
    return dict(pairs)


def flag(params: dict[str, str], name: str) -> bool:
    """A boolean query parameter: absent is false, ``?name`` alone is true."""
    if name not in params:
        return False
    value = params[name].lower()
    if value in ("", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise errors.InvalidInput(f"{name} must be true or false", code="invalid_request")


async def send_json(send: Send, status: int, data: Any, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(scope: Scope, send: Send, error: errors.ApiError) -> None:
    """Answer with ``error``: as HTTP, or as a WebSocket denial response."""
    answer = error_answer(error)
    prefix = "websocket.http" if scope["type"] == "websocket" else "http"
    await send({"type": f"{prefix}.response.start", "status": answer.status, "headers": answer.headers})
    await send({"type": f"{prefix}.response.body", "body": answer.body})


async def read_json(receive: Receive) -> Any:
    """A small JSON request body (size-capped)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise errors.MalformedBody("the client went away mid-body")
        body += message.get("body", b"")
        if len(body) > MAX_JSON_BODY:
            raise errors.PayloadTooLarge(f"a JSON body may be at most {MAX_JSON_BODY} bytes")
        if not message.get("more_body", False):
            break
    try:
        return json.loads(body) if body else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.MalformedBody(f"request body is not valid JSON: {exc}") from None


CLOSE_TOO_BIG = 1009


class WebSocket:
    """One accepted ASGI WebSocket: receive and send messages, close with a code.

    A message over ``max_message`` closes the WebSocket with 1009 (message
    too big). The server's own limit sits higher (hypercorn's
    ``websocket_max_message_size``), as its handling of an oversized
    message leaves the connection hanging until the front gives up on it.
    """

    def __init__(self, receive: Receive, send: Send, max_message: int | None = None) -> None:
        self._receive = receive
        self._send = send
        self.max_message = max_message
        self.closed = False

    @classmethod
    async def accept(cls, receive: Receive, send: Send, max_message: int | None = None) -> WebSocket:
        message = await receive()
        if message["type"] != "websocket.connect":
            raise errors.MalformedBody("expected a WebSocket handshake")
        await send({"type": "websocket.accept"})
        return cls(receive, send, max_message)

    async def receive(self) -> bytes | str | None:
        """The next message; None once the client has closed (or was closed for an oversized one)."""
        if self.closed:
            return None
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self.closed = True
            return None
        data: bytes | str | None = message.get("bytes")
        if data is None:
            data = message.get("text") or ""
        if self.max_message is not None and len(data) > self.max_message:
            await self.close(CLOSE_TOO_BIG, f"a message may be at most {self.max_message} bytes")
            return None
        return data

    async def send(self, data: bytes | str) -> None:
        if self.closed:
            return
        if isinstance(data, bytes):
            await self._send({"type": "websocket.send", "bytes": data})
        else:
            await self._send({"type": "websocket.send", "text": data})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})
