"""The public listener of a server: routes each request, relays the rest to the app.

Session endpoints must be spliced at the byte level (a WebSocket is never
decoded on the way, a multi-GB upload never buffered), which an ASGI server
cannot do: it owns the socket and re-frames everything. So the listener is
this front: it reads each request head with h11 and asks ``route`` what to
do. A route returns a handler that takes over the exchange (the edge
router, the agent's port forwarding), or None: then the request goes to the
ASGI app, called in-process for plain HTTP (one parse per request), relayed
to hypercorn on a private unix socket for WebSocket upgrades (hypercorn
speaks WebSocket for the app). Every request on a keep-alive connection is
routed on its own, so an API call and a session request may share a
connection. A slow or greedy client is bounded by ``chaser._front_limits``:
time to send a head and a body, connections per address.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.middleware import ProxyFixMiddleware
from hypercorn.trio import serve as hypercorn_serve

from chaser.wire import errors
from serving.asgi_call import Exchange, scope_of
from serving.front_limits import (
    ConnectionCounts,
    FrontLimits,
    HeadTimedOut,
    RequestTimeout,
    lingering_close,
    next_request_event,
    timed_body,
)
from serving.relay import ClientGone, Downstream, forward_headers, is_upgrade, relay

log = logging.getLogger(__name__)

Handler = Callable[[Downstream, h11.Request], Awaitable[None]]
Route = Callable[[h11.Request, str], Awaitable[Handler | None]]  # the request, its peer's address

# How long a keep-alive connection may wait for its next request.
IDLE_TIMEOUT = 75.0
# Kernel keepalive on client connections: a peer that vanished without
# closing (a dead laptop, a cut network) is noticed within about a minute,
# which ends its splices and releases what they hold.
_KEEPALIVE = ((socket.TCP_KEEPIDLE, 30), (socket.TCP_KEEPINTVL, 10), (socket.TCP_KEEPCNT, 3))


def _peer(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "unknown"


def _local(stream: trio.SocketStream) -> tuple[str, int] | None:
    try:
        host, port = stream.socket.getsockname()[:2]
    except OSError:
        return None
    return str(host), int(port)


def _set_keepalive(stream: trio.SocketStream) -> None:
    with contextlib.suppress(OSError):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in _KEEPALIVE:
            stream.setsockopt(socket.IPPROTO_TCP, option, value)


def first_of(*routes: Route) -> Route:
    """A route asking each of ``routes`` in turn; the first handler offered wins."""

    async def route(request: h11.Request, peer: str) -> Handler | None:
        for candidate in routes:
            handler = await candidate(request, peer)
            if handler is not None:
                return handler
        return None

    return route


AsgiApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class Front:
    def __init__(self, route: Route, app: AsgiApp, app_socket: str, limits: FrontLimits | None = None) -> None:
        self.route = route
        self.app = app
        self.app_socket = app_socket
        self.limits = limits or FrontLimits()
        self.connections = ConnectionCounts(self.limits.max_connections_per_address)

    async def call_app(self, down: Downstream, request: h11.Request, server: tuple[str, int] | None) -> None:
        """Serve one plain HTTP request with the app, in this task."""
        try:
            scope = scope_of(request, down.peer, server)
        except errors.ApiError as exc:
            await down.send_error(exc)
            raise ClientGone() from None
        exchange = Exchange(down, request)
        try:
            await self.app(scope, timed_body(exchange, self.limits.body_timeout), exchange.send)
        except Exception:
            log.exception("%s %r failed", request.method.decode(), request.target)
            if not exchange.started:
                await down.send_error(errors.ApiError("internal error"))
            raise ClientGone() from None
        if exchange.client_gone or not exchange.finished:
            raise ClientGone()

    async def handle(self, stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        if not self.connections.admit(peer):
            with trio.CancelScope(shield=True):
                await stream.aclose()
            return
        try:
            await self._handle(stream, peer)
        finally:
            self.connections.release(peer)

    async def _handle(self, stream: trio.SocketStream, peer: str) -> None:
        _set_keepalive(stream)
        down = Downstream(stream, peer)
        server = _local(stream)
        app: trio.abc.Stream | None = None
        try:
            while True:
                event = await next_request_event(down, IDLE_TIMEOUT, self.limits.header_timeout)
                if not isinstance(event, h11.Request):
                    break
                try:
                    handler = await self.route(event, down.peer)
                except errors.ApiError as exc:
                    # The body (if any) is left unread, so the connection closes after.
                    await down.send_error(exc)
                    break
                if handler is not None:
                    await handler(down, event)
                elif not is_upgrade(event):
                    await self.call_app(down, event, server)
                else:
                    if app is None:
                        app = await trio.open_unix_socket(self.app_socket)
                    add = [(b"x-forwarded-for", down.peer.encode())]
                    headers = forward_headers(event, drop=[b"x-forwarded-for"], add=add)
                    request = h11.Request(method=event.method, target=event.target, headers=headers)
                    if not await relay(down, app, request):
                        await app.aclose()
                        app = None
                if not down.reusable():
                    break
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            error = errors.MalformedBody(f"malformed HTTP request: {exc}", code="bad_http")
            error.status = status
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
                await down.send_error(error)
        except HeadTimedOut:
            late = RequestTimeout(f"the request head did not arrive within {self.limits.header_timeout:g}s")
            await lingering_close(stream, _bare_error(late))
        except (trio.BrokenResourceError, trio.ClosedResourceError, ClientGone):
            pass
        except Exception:
            # One connection's failure must never end the server's accept loop.
            log.exception("connection from %s failed", down.peer)
        finally:
            with trio.CancelScope(shield=True):
                if app is not None:
                    await app.aclose()
                await stream.aclose()


def _bare_error(error: errors.ApiError) -> bytes:
    """An error response written without h11 (whose state a half-read head leaves unusable)."""
    body = json.dumps(error.to_json()).encode()
    head = (
        f"HTTP/1.1 {error.status} Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


@contextlib.asynccontextmanager
async def _private_dir() -> AsyncIterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="chaser-app-"))
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            (path / "app.sock").unlink()
            path.rmdir()


async def serve(
    app: object,
    hypercorn: HypercornConfig,
    bind: str,
    route: Route,
    *,
    limits: FrontLimits | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` behind the front on ``bind`` (host:port); report ``http://host:port``."""
    host, _, port = bind.rpartition(":")
    async with _private_dir() as private, trio.open_nursery() as nursery:
        app_socket = str(private / "app.sock")
        hypercorn.bind = [f"unix:{app_socket}"]
        # The app sees the client's address (the front's X-Forwarded-For), not the socket's.
        proxied = ProxyFixMiddleware(app, mode="legacy", trusted_hops=1)  # type: ignore[arg-type]
        await nursery.start(partial(hypercorn_serve, proxied, hypercorn))
        front = Front(route, app, app_socket, limits)  # type: ignore[arg-type]
        listeners = await trio.open_tcp_listeners(int(port), host=host.strip("[]") or None)
        nursery.start_soon(partial(trio.serve_listeners, front.handle, listeners))
        address = listeners[0].socket.getsockname()
        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        task_status.started(f"http://{shown}:{address[1]}")
