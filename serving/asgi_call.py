"""One plain HTTP exchange handed to the ASGI app in-process.

The front parses every request head with h11 anyway (it must route session
endpoints itself). Relaying an API call over a unix socket to hypercorn
parsed it a second time and cost two more socket hops per request; so the
front calls the app directly with an ASGI ``http`` scope, streaming the body
in and the response out through its own h11 connection. Only WebSocket
upgrades still go to hypercorn, which speaks the WebSocket protocol.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import h11
import trio

from chaser.wire import errors
from serving.relay import MAX_HEAD, RECEIVE_SIZE, Downstream

Scope = dict[str, Any]
Message = dict[str, Any]

_ASGI = {"version": "3.0", "spec_version": "2.3"}


def scope_of(request: h11.Request, peer: str, server: tuple[str, int] | None) -> Scope:
    """The ASGI scope of ``request``; the client is the front's peer, whatever headers claim."""
    path, _, query = bytes(request.target).partition(b"?")
    try:
        decoded = unquote(path.decode("ascii"))
    except UnicodeDecodeError:
        raise errors.MalformedBody("the request target is not ASCII", code="bad_http") from None
    return {
        "type": "http",
        "asgi": _ASGI,
        "http_version": request.http_version.decode("ascii"),
        "method": request.method.decode("ascii"),
        "scheme": "http",
        "path": decoded,
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": [(bytes(k), bytes(v)) for k, v in request.headers if k != b"x-forwarded-for"],
        "client": (peer, 0),
        "server": server,
        "extensions": {},
    }


class Exchange:
    """The ``receive`` and ``send`` of one request, over the client's h11 connection."""

    def __init__(self, down: Downstream, request: h11.Request) -> None:
        self.down = down
        self.head = request.method == b"HEAD"
        self.started = False
        self.finished = False
        self.client_gone = False
        self._body_done = False

    async def receive(self) -> Message:
        if self._body_done or self.client_gone:
            return await self._wait_for_disconnect()
        conn = self.down.conn
        if conn.their_state is not h11.SEND_BODY:
            self._body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if conn.they_are_waiting_for_100_continue and not self.started:
            await self.down.send(h11.InformationalResponse(status_code=100, headers=[]))
        try:
            event = await self.down.next_event()
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            event = h11.ConnectionClosed()
        if isinstance(event, h11.Data):
            return {"type": "http.request", "body": bytes(event.data), "more_body": True}
        if isinstance(event, h11.EndOfMessage):
            self._body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        self.client_gone = True
        return {"type": "http.disconnect"}

    async def _wait_for_disconnect(self) -> Message:
        """Block until the client hangs up; bytes it sends meanwhile wait for the next cycle."""
        conn = self.down.conn
        while not self.client_gone and len(conn.trailing_data[0]) < MAX_HEAD:
            try:
                data = await self.down.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.client_gone = True
                break
            conn.receive_data(bytes(data))
        if not self.client_gone:
            await trio.sleep_forever()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        """Pass a response message down; after the client has gone, a no-op."""
        if self.client_gone:
            return
        try:
            await self._send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.client_gone = True

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            await self.down.send(h11.Response(status_code=message["status"], headers=headers))
        elif kind == "http.response.body":
            body = message.get("body", b"")
            if body and not self.head:
                await self.down.send(h11.Data(data=body))
            if not message.get("more_body", False):
                await self.down.send(h11.EndOfMessage())
                self.finished = True
