"""A CDP client of the session's Chromium: calls matched to answers, events fanned out.

Used by the agent's browser jobs (actions, scrape) and by the graceful
stop. It connects through ``Runtime.open_port``, so it needs no route from
the host into the session and works for any runtime.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import trio
import trio_websocket

from agent.browser.chromium import DEVTOOLS_PORT
from agent.browser.devtools_http import HOST, DevtoolsHttpError, get_json
from agent.runtimes.base import Runtime, RuntimeFailure

# A full-page screenshot of a long page is several MB of base64.
MAX_MESSAGE = 64 << 20

Event = dict[str, Any]
# What trying to reach a Chromium that is not (any more) there raises.
UNREACHABLE = (RuntimeFailure, DevtoolsHttpError, OSError, trio.BrokenResourceError, trio_websocket.HandshakeError)


class CdpError(Exception):
    """A call Chromium answered with an error, or could not answer (``code`` None: the connection ended)."""

    def __init__(self, method: str, message: str, code: int | None = None) -> None:
        super().__init__(f"{method}: {message}")
        self.method = method
        self.message = message
        self.code = code


class CdpConnection:
    """One WebSocket to Chromium; ``call`` from any number of tasks."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._subscribers: set[trio.MemorySendChannel[Event]] = set()
        self.closed_reason: str | None = None

    async def call(self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None) -> Any:
        """Send one command and wait for its answer; its ``result``, or ``CdpError``."""
        if self.closed_reason is not None:
            raise CdpError(method, self.closed_reason)
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._pending[call_id] = send
        try:
            await self._ws.send_message(json.dumps(message))
            async with receive:
                try:
                    answer = await receive.receive()
                except trio.EndOfChannel:
                    raise CdpError(method, self.closed_reason or "the browser connection closed") from None
        except trio_websocket.ConnectionClosed:
            raise CdpError(method, self.closed_reason or "the browser connection closed") from None
        finally:
            self._pending.pop(call_id, None)
        if "error" in answer:
            error = answer["error"]
            raise CdpError(method, str(error.get("message", error)), error.get("code"))
        return answer.get("result", {})

    @contextmanager
    def subscribe(self) -> Iterator[trio.MemoryReceiveChannel[Event]]:
        """Every event from now on (subscribe before the call that causes the ones awaited)."""
        send, receive = trio.open_memory_channel[Event](math.inf)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    async def read_forever(self) -> None:
        """Route answers to their callers and events to subscribers until the socket ends."""
        try:
            while True:
                raw = await self._ws.get_message()
                message = json.loads(raw)
                if "id" in message:
                    waiter = self._pending.pop(message["id"], None)
                    if waiter is not None:
                        waiter.send_nowait(message)
                        waiter.close()
                else:
                    for subscriber in list(self._subscribers):
                        subscriber.send_nowait(message)
        except trio_websocket.ConnectionClosed as exc:
            self.closed_reason = f"the browser connection closed ({exc.reason.name if exc.reason else 'gone'})"
        except ValueError:
            self.closed_reason = "the browser sent something that is not JSON"
        finally:
            self.closed_reason = self.closed_reason or "the browser connection closed"
            for waiter in self._pending.values():
                waiter.close()
            for subscriber in self._subscribers:
                subscriber.close()


async def browser_ws_path(runtime: Runtime, sandbox_id: str) -> str:
    """The path of Chromium's browser-level WebSocket, from ``/json/version``."""
    version = await get_json(await runtime.open_port(sandbox_id, DEVTOOLS_PORT), "/json/version")
    return urlsplit(str(version["webSocketDebuggerUrl"])).path


@asynccontextmanager
async def open_cdp(runtime: Runtime, sandbox_id: str) -> AsyncIterator[CdpConnection]:
    """A browser-level CDP connection to the sandbox's Chromium, closed on exit."""
    path = await browser_ws_path(runtime, sandbox_id)
    stream = await runtime.open_port(sandbox_id, DEVTOOLS_PORT)
    async with trio.open_nursery() as nursery:
        try:
            ws = await trio_websocket.wrap_client_stream(
                nursery, cast(trio.SocketStream, stream), HOST, path, max_message_size=MAX_MESSAGE
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        connection = CdpConnection(ws)
        nursery.start_soon(connection.read_forever)
        try:
            yield connection
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await ws.aclose()
            nursery.cancel_scope.cancel()
