"""The edge router: a session endpoint request, authenticated, spliced to its agent.

A request is for a session's endpoints when it is addressed

- by path: ``/s/<session_id>/<endpoint>``,
- by host: ``<session_id>.<session_domain>`` (then the whole path is the
  endpoint), or ``<port>-<session_id>.<session_domain>`` (a forwarded port).

The router authenticates the caller (an API key, or a session access
token in the ``Authorization`` header, the ``chaser_token`` query parameter
or cookie), checks the scope the endpoint needs and that the session is the
caller's and runs, then relays the request to the agent that owns the
session as bytes (``chaser._relay``): bodies stream, WebSockets are spliced.
The client's credentials never reach the agent or the sandbox.

Scopes: ``GET /`` and ``GET /pty`` need sessions.read; the PTY and exec
WebSockets exec.write; files and fs reads files.read, their writes
files.write; ports and tunnels sessions.write.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from dataclasses import dataclass
from functools import partial
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

import h11
import trio

from chaser import errors
from chaser._front import Handler
from chaser._relay import ClientGone, Downstream, forward_headers, header, is_upgrade, relay
from scheduler import session_tokens
from scheduler.auth import authenticate
from scheduler.session_tokens import Claims
from scheduler.sessions import SessionService

TOKEN_PARAM = "chaser_token"
CLIENT_AUTHORIZATION = b"x-chaser-client-authorization"
_CONNECT_TIMEOUT = 10.0
# Routed requests refresh a session's last activity at most this often.
_ACTIVITY_WRITE_INTERVAL = 5.0

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_PATH_STYLE = re.compile(rb"^/s/([^/?]*)(/[^?]*)?(\?.*)?$", re.S)


@dataclass(frozen=True)
class SessionTarget:
    """Where a request goes: the session, and the endpoint path under it (``/pty``, ``/ports/80/x``)."""

    session_id: str
    endpoint: str  # raw path, percent-encoding kept
    query: str  # raw, without "?"
    # What the client sees as the root of a forwarded port, for X-Forwarded-Prefix.
    public_prefix: str


def session_target(target: bytes, host: bytes | None, domain: str) -> SessionTarget | None:
    """Whether a request is for a session's endpoints, and which; a pure function."""
    raw = target.decode("latin-1")
    path, _, query = raw.partition("?")
    hostname = (host or b"").decode("latin-1").strip().lower()
    hostname = hostname.rsplit(":", 1)[0] if not hostname.endswith("]") else hostname
    suffix = "." + domain.lower().strip(".")
    if hostname.endswith(suffix):
        label = hostname[: -len(suffix)]
        if re.fullmatch(_UUID, label):
            return SessionTarget(label.lower(), path or "/", query, "")
        port_style = re.fullmatch(rf"(\d{{1,5}})-({_UUID})", label)
        if port_style:
            return SessionTarget(port_style[2].lower(), f"/ports/{port_style[1]}{path or '/'}", query, "")
    match = _PATH_STYLE.match(target)
    if match is None:
        return None
    raw_id = match[1].decode("latin-1")
    try:
        session_id = str(uuid.UUID(raw_id))
    except ValueError:
        raise errors.NotFound(f"session {raw_id} not found", code="session_not_found") from None
    endpoint = (match[2] or b"/").decode("latin-1")
    port = re.match(r"^/ports/(\d{1,5})(?=/|$)", endpoint)
    prefix = f"/s/{raw_id}/ports/{port[1]}" if port else ""
    return SessionTarget(session_id, endpoint, query, prefix)


def required_scope(endpoint: str, method: str, websocket: bool) -> str:
    """The scope a request to ``endpoint`` needs; 404 for what is no endpoint."""
    first = endpoint.lstrip("/").split("/", 1)[0]
    if first in ("ports", "tunnel"):
        return "sessions.write"
    if websocket:
        if first in ("pty", "exec"):
            return "exec.write"
    elif first in ("", "pty") and endpoint.strip("/") == first and method in ("GET", "HEAD"):
        return "sessions.read"
    elif first in ("files", "fs"):
        return "files.read" if method in ("GET", "HEAD") else "files.write"
    raise errors.NotFound(f"no session endpoint {endpoint!r}", code="not_found")


@dataclass(frozen=True)
class _Credentials:
    header_used: bool  # the client's Authorization was ours (not the program's)
    api_key: str | None
    token: str | None


def _credentials(request: h11.Request, query: str) -> _Credentials:
    authorization = (header(request, b"authorization") or b"").decode("latin-1")
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        if session_tokens.looks_like_token(value):
            return _Credentials(True, None, value)
        return _Credentials(True, value, None)
    for name, param in parse_qsl(query, keep_blank_values=True):
        if name == TOKEN_PARAM:
            return _Credentials(False, None, param)
    cookie = SimpleCookie()
    with contextlib.suppress(CookieError):
        cookie.load((header(request, b"cookie") or b"").decode("latin-1"))
    if TOKEN_PARAM in cookie:
        return _Credentials(False, None, cookie[TOKEN_PARAM].value)
    raise errors.Unauthorized(
        f"missing credentials: send 'Authorization: Bearer sk_...' or a session token ({TOKEN_PARAM})"
    )


def _without_token(query: str) -> str:
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != TOKEN_PARAM]
    return urlencode(pairs)


def _strip_cookie(request: h11.Request) -> bytes | None:
    raw = header(request, b"cookie")
    if raw is None:
        return None
    kept = [c for c in raw.split(b";") if c.strip().split(b"=", 1)[0] != TOKEN_PARAM.encode()]
    return b";".join(kept) if kept else None


class EdgeRouter:
    def __init__(self, service: SessionService) -> None:
        self.service = service
        self.store = service.store
        self.domain = service.config.session_domain
        self.cluster_token = service.config.token.get_secret_value()
        self.token_key = session_tokens.signing_key(self.cluster_token)
        self._activity_written: dict[str, float] = {}

    async def route(self, request: h11.Request) -> Handler | None:
        target = session_target(bytes(request.target), header(request, b"host"), self.domain)
        if target is None:
            return None
        method = request.method.decode("ascii", "replace").upper()
        websocket = is_upgrade(request)
        scope = required_scope(target.endpoint, method, websocket)
        credentials = _credentials(request, target.query)
        account_id = await self._authorize(credentials, target.session_id, scope)
        row = await self.service.get(account_id, target.session_id)
        if row["status"] != "running":
            raise errors.Conflict(f"session {row['id']} is {row['status']}", code="session_not_running")
        host = await self.store.run(self.store.host, row["host_id"])
        if host is None:
            raise errors.Unavailable("the session's host is gone", code="host_gone")
        await self._record_activity(row["id"])
        return partial(self._forward, host["url"], target, credentials)

    async def _authorize(self, credentials: _Credentials, session_id: str, scope: str) -> str:
        if credentials.token is not None:
            claims: Claims = session_tokens.verify(self.token_key, credentials.token, time.time())
            if claims.session_id != session_id:
                raise errors.Forbidden("this session token is for another session", code="wrong_session")
            claims.require(scope)
            return claims.account_id
        principal = await authenticate(self.store, f"Bearer {credentials.api_key}")
        principal.require(scope)
        return principal.account_id

    async def _record_activity(self, session_id: str) -> None:
        now = time.time()
        if now - self._activity_written.get(session_id, 0.0) < _ACTIVITY_WRITE_INTERVAL:
            return
        self._activity_written[session_id] = now
        if len(self._activity_written) > 10_000:
            self._activity_written = {k: v for k, v in self._activity_written.items() if now - v < 60}
        await self.store.run(self.store.record_activity, session_id, now)

    async def _forward(
        self, host_url: str, target: SessionTarget, credentials: _Credentials, down: Downstream, request: h11.Request
    ) -> None:
        query = _without_token(target.query) if not credentials.header_used else target.query
        agent_target = f"/v1/sandboxes/{target.session_id}{target.endpoint}" + (f"?{query}" if query else "")
        add: list[tuple[bytes, bytes]] = [
            (b"authorization", f"Bearer {self.cluster_token}".encode()),
            (b"x-forwarded-for", down.peer.encode()),
            (b"x-forwarded-proto", urlsplit(self.service.public_url).scheme.encode() or b"http"),
        ]
        if (public_host := header(request, b"host")) is not None:
            add.append((b"x-forwarded-host", public_host))
        if target.public_prefix:
            add.append((b"x-forwarded-prefix", target.public_prefix.encode()))
        if not credentials.header_used and (client_auth := header(request, b"authorization")) is not None:
            add.append((CLIENT_AUTHORIZATION, client_auth))
        if (cookie := _strip_cookie(request)) is not None:
            add.append((b"cookie", cookie))
        drop = [b"authorization", b"cookie", CLIENT_AUTHORIZATION, b"x-forwarded-for", b"x-forwarded-host",
                b"x-forwarded-proto", b"x-forwarded-prefix"]  # fmt: skip
        forwarded = h11.Request(
            method=request.method, target=agent_target.encode("latin-1"), headers=forward_headers(request, drop, add)
        )
        try:
            agent = await _connect(host_url)
        except OSError as exc:
            error = errors.BadGateway(f"the session's host is unreachable: {exc}", code="host_unreachable")
            await down.send_error(error)
            return
        async with agent:
            try:
                await relay(down, agent, forwarded)
            except ClientGone:
                pass
            except trio.BrokenResourceError:
                await down.send_error(errors.BadGateway("the session's host closed the connection", code="host_error"))


async def _connect(url: str) -> trio.SocketStream:
    parts = urlsplit(url)
    if parts.hostname is None:
        raise OSError(f"bad host URL {url!r}")
    with trio.move_on_after(_CONNECT_TIMEOUT):
        return await trio.open_tcp_stream(parts.hostname, parts.port or 80)
    raise OSError("connect timed out")
