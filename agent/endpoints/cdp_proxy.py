"""The CDP proxy: a browser session's DevTools endpoint, reached through the session endpoints.

``/v1/sandboxes/<id>/json[/...]`` and ``/v1/sandboxes/<id>/devtools/...``
come to this agent's front from the scheduler's edge router (host token
required) and go, as bytes, to Chromium's port on the sandbox's loopback
(``Runtime.open_port``). The answers of ``/json/version``, ``/json/list``
and ``/json/new`` are rewritten (``cdp_urls``) so that their WebSocket URLs
lead back through the public endpoint the client used: its scheme, host and
path prefix come in ``X-Forwarded-*`` headers, the query to add (a session
token for clients that can only pass a URL) in ``X-Chaser-Cdp-Query``. A
DevTools WebSocket is spliced after Chromium's 101, never decoded, and
holds a connection lease while open.
"""

from __future__ import annotations

import contextlib
import hmac
import re
from collections.abc import Callable
from functools import partial

import h11
import trio

from agent.browser.cdp_urls import PublicEndpoint, rewrite_json
from agent.browser.chromium import DEVTOOLS_PORT
from agent.browser.devtools_http import HOST
from agent.endpoints.failures import api_error
from agent.runtimes.base import RuntimeFailure
from agent.sandboxes.lease_keeper import LeaseKeeper
from agent.sandboxes.manager import SandboxManager
from chaser.wire import errors
from serving.front import Handler
from serving.relay import MAX_HEAD, RECEIVE_SIZE, ClientGone, Downstream, forward_headers, header, is_upgrade, relay

_CDP_TARGET = re.compile(rb"^/v1/sandboxes/([0-9a-f-]{36})(/json(?:/[^?]*)?|/devtools/[^?]*)(\?.*)?$", re.S)
# The answers whose URLs name Chromium itself.
_REWRITTEN = {f"/json{p}{slash}" for p in ("", "/version", "/list", "/new") for slash in ("", "/")}
CDP_QUERY = b"x-chaser-cdp-query"
MAX_JSON = 4 << 20
_DROP = [b"authorization", b"host", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto",
         b"x-forwarded-prefix", CDP_QUERY]  # fmt: skip


def public_endpoint(request: h11.Request) -> PublicEndpoint:
    """Where the client reached the session, from what the edge router added."""

    def text(name: bytes, default: str = "") -> str:
        return (header(request, name) or default.encode()).decode("latin-1")

    return PublicEndpoint(
        scheme="https" if text(b"x-forwarded-proto", "http") == "https" else "http",
        host=text(b"x-forwarded-host") or text(b"host"),
        prefix=text(b"x-forwarded-prefix").rstrip("/"),
        query=text(CDP_QUERY.lower()),
    )


class CdpProxy:
    def __init__(self, token: bytes, manager: SandboxManager, keeper: LeaseKeeper) -> None:
        self.token = token
        self.manager = manager
        self.keeper = keeper

    async def route(self, request: h11.Request, _peer: str) -> Handler | None:
        match = _CDP_TARGET.match(bytes(request.target))
        if match is None:
            return None
        scheme, _, presented = (header(request, b"authorization") or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(presented.strip(), self.token):
            raise errors.Unauthorized("missing or wrong host token")
        sandbox_id = match[1].decode()
        if self.manager.running(sandbox_id).session_type != "browser":
            raise errors.NotFound(f"session {sandbox_id} is not a browser session: it has no CDP endpoint")
        path = match[2].decode("latin-1")
        upgrade = is_upgrade(request)
        if upgrade and not path.startswith("/devtools/"):
            raise errors.NotFound(f"no WebSocket endpoint {path!r}; CDP WebSockets are under /devtools/")
        headers = [*forward_headers(request, drop=_DROP), (b"host", HOST.encode())]
        # Chromium's own query (/json/new?<url>), without anything of ours.
        target = match[2] + (match[3] or b"")
        forwarded = h11.Request(method=request.method, target=target, headers=headers)
        if upgrade:
            return partial(self._websocket, sandbox_id, forwarded)
        if path in _REWRITTEN and request.method in (b"GET", b"PUT"):
            # Read whole and answered here: the client's body (there is none to send) stays behind.
            bodiless = [(k, v) for k, v in headers if k not in (b"content-length", b"transfer-encoding")]
            asked = h11.Request(method=request.method, target=target, headers=bodiless)
            return partial(self._rewritten, sandbox_id, asked, public_endpoint(request))
        return partial(self._plain, sandbox_id, forwarded)

    async def _open(self, sandbox_id: str, down: Downstream) -> trio.abc.Stream | None:
        try:
            return await self.manager.runtime.open_port(sandbox_id, DEVTOOLS_PORT)
        except RuntimeFailure as exc:
            await down.send_error(api_error(exc, sandbox_id))
            return None

    async def _websocket(self, sandbox_id: str, forwarded: h11.Request, down: Downstream, _: h11.Request) -> None:
        self.keeper.touch(sandbox_id)
        async with self.keeper.hold(sandbox_id, "cdp", keepalive=False) as lease:
            upstream = await self._open(sandbox_id, down)
            if upstream is None:
                return
            async with upstream:
                await self._relay(down, upstream, forwarded, on_traffic=lambda: self.keeper.active(lease))
        self.keeper.touch(sandbox_id)

    async def _plain(self, sandbox_id: str, forwarded: h11.Request, down: Downstream, _: h11.Request) -> None:
        self.keeper.touch(sandbox_id)
        upstream = await self._open(sandbox_id, down)
        if upstream is not None:
            async with upstream:
                await self._relay(down, upstream, forwarded)

    async def _relay(
        self,
        down: Downstream,
        upstream: trio.abc.Stream,
        forwarded: h11.Request,
        on_traffic: Callable[[], None] | None = None,
    ) -> None:
        try:
            await relay(down, upstream, forwarded, on_traffic=on_traffic)
        except ClientGone:
            pass
        except trio.BrokenResourceError:
            await down.send_error(errors.BadGateway("the browser closed the connection", code="browser_closed"))

    async def _rewritten(
        self, sandbox_id: str, forwarded: h11.Request, public: PublicEndpoint, down: Downstream, _: h11.Request
    ) -> None:
        """Chromium's answer read whole (it is small JSON), its URLs rewritten, sent with its status."""
        self.keeper.touch(sandbox_id)
        upstream = await self._open(sandbox_id, down)
        if upstream is None:
            return
        async with upstream:
            try:
                response, body = await _exchange(upstream, forwarded)
            except (trio.BrokenResourceError, h11.RemoteProtocolError) as exc:
                await down.send_error(errors.BadGateway(f"the browser did not answer: {exc}", code="browser_closed"))
                return
        if response.status_code == 200:
            with contextlib.suppress(ValueError):  # not JSON after all: passed on as Chromium said it
                body = rewrite_json(body, public)
        headers = [(b"content-type", header_of(response, b"content-type") or b"application/json")]
        headers.append((b"content-length", str(len(body)).encode()))
        await down.send(h11.Response(status_code=response.status_code, headers=headers))
        await down.send(h11.Data(data=body))
        await down.send(h11.EndOfMessage())


def header_of(response: h11.Response, name: bytes) -> bytes | None:
    for key, value in response.headers:
        if key == name:
            return bytes(value)
    return None


async def _exchange(upstream: trio.abc.Stream, request: h11.Request) -> tuple[h11.Response, bytes]:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    await upstream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await upstream.receive_some(RECEIVE_SIZE)))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_JSON:
                raise trio.BrokenResourceError(f"an answer larger than {MAX_JSON} bytes")
        elif isinstance(event, h11.EndOfMessage) and response is not None:
            return response, bytes(body)
        elif isinstance(event, h11.ConnectionClosed | h11.EndOfMessage):
            raise trio.BrokenResourceError("the browser closed the connection mid-answer")
