"""The edge router: a session endpoint request, authenticated, spliced to its agent.

A request is for a session's endpoints when it is addressed

- by path: ``/s/<session_id>/<endpoint>``,
- by host: ``<session_id>.<session_domain>`` (then the whole path is the
  endpoint), or ``<port>-<session_id>.<session_domain>`` (a forwarded port).

The router authenticates the caller through the API's own code (an API
key or a JWT, with ``X-Chaser-Account`` selecting the account; or a
session access token in the ``Authorization`` header, the ``chaser_token``
query parameter or cookie), checks the scope the endpoint needs and that
the session is in the caller's account (another account's session is a
404, like an unknown one) and runs, then relays the request to the agent
that owns the session as bytes (``serving.relay``): bodies stream,
WebSockets are spliced. The client's credentials never reach the agent or
the sandbox. Refused calls and mutations (file writes, opening a PTY, exec
or tunnel) go to the audit trail like the API's.

Scopes: ``GET /`` and ``GET /pty`` need sessions.read; the PTY and exec
WebSockets exec.write; files and fs reads files.read, their writes
files.write; ports, tunnels and a browser's CDP (``/json/...``,
``/devtools/...``) sessions.write. Clients that can only be given a URL
(most CDP clients) put a session token in its query (``chaser_token``) or
its path (``/s/<id>/t/<token>/...``); the CDP answers' WebSocket URLs carry
it on (``X-Chaser-Cdp-Query``), or a token minted for the caller.
A session token is checked at each use against its session's token
generation and its minter (``scheduler.token_revocation``); a WebSocket
upgrade from a browser page of another site is refused (``scheduler.origins``).
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

from chaser.wire import errors
from scheduler import session_tokens, token_revocation
from scheduler.audit import actor_fields, append_event
from scheduler.auth import Authenticator, AuthFailure, Principal
from scheduler.origins import check_origin
from scheduler.session_tokens import Claims
from scheduler.sessions import SessionService
from scheduler.store import Row
from scheduler.tenancy import ACCOUNT_HEADER, jwt_verifier
from scheduler.token_keys import TokenKeys
from serving.front import Handler
from serving.relay import ClientGone, Downstream, forward_headers, header, is_upgrade, relay

TOKEN_PARAM = "chaser_token"
CLIENT_AUTHORIZATION = b"x-chaser-client-authorization"
# The query the agent's CDP proxy adds to the WebSocket URLs it rewrites.
CDP_QUERY = b"x-chaser-cdp-query"
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
    # What the client sees as the root of a forwarded port, or of the CDP
    # endpoints (their URLs are rewritten to it), for X-Forwarded-Prefix.
    public_prefix: str
    # A session token given in the path (``/t/<token>/...``), for clients
    # that append paths to a base URL and so lose its query.
    path_token: str | None = None


_PATH_TOKEN = re.compile(r"^/t/(st_[^/]+)(/.*)?$", re.S)
_CDP_ENDPOINTS = ("json", "devtools")


def is_cdp(endpoint: str) -> bool:
    return endpoint.lstrip("/").split("/", 1)[0] in _CDP_ENDPOINTS


def _endpoint_target(session_id: str, endpoint: str, query: str, base: str) -> SessionTarget:
    """The target under a session's root ``base`` as the client sees it ("/s/<id>", or "" on its subdomain)."""
    token = None
    if tokened := _PATH_TOKEN.match(endpoint):
        token, endpoint = tokened[1], tokened[2] or "/"
        base = f"{base}/t/{token}"
    prefix = base if is_cdp(endpoint) else ""
    if port := re.match(r"^/ports/(\d{1,5})(?=/|$)", endpoint):
        prefix = f"{base}/ports/{port[1]}" if base else ""
    return SessionTarget(session_id, endpoint, query, prefix, token)


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
            return _endpoint_target(label.lower(), path or "/", query, "")
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
    return _endpoint_target(session_id, endpoint, query, f"/s/{raw_id}")


@dataclass(frozen=True)
class Requirement:
    """What a session endpoint needs, and the action its audit event names (None: not audited)."""

    scope: str
    action: str | None


_FILE_ACTIONS = {"PUT files": "file.upload", "DELETE files": "file.delete", "POST fs": "file.operation"}


def requirement(endpoint: str, method: str, websocket: bool) -> Requirement:
    """The scope a request to ``endpoint`` needs; 404 for what is no endpoint.

    A forwarded port's own traffic is the program's business, not audited.
    """
    first = endpoint.lstrip("/").split("/", 1)[0]
    if first == "ports":
        return Requirement("sessions.write", None)
    if first == "tunnel":
        return Requirement("sessions.write", "session.tunnel" if websocket else None)
    if first in _CDP_ENDPOINTS:  # driving the browser: whatever a page can do
        return Requirement("sessions.write", "session.cdp" if websocket else None)
    if websocket:
        if first in ("pty", "exec"):
            return Requirement("exec.write", f"session.{first}")
    elif first in ("", "pty") and endpoint.strip("/") == first and method in ("GET", "HEAD"):
        return Requirement("sessions.read", None)
    elif first in ("files", "fs"):
        if method in ("GET", "HEAD"):
            return Requirement("files.read", None)
        return Requirement("files.write", _FILE_ACTIONS.get(f"{method} {first}", "file.write"))
    raise errors.NotFound(f"no session endpoint {endpoint!r}", code="not_found")


@dataclass(frozen=True)
class _Credentials:
    header_used: bool  # the client's Authorization was ours (not the program's)
    api_key: str | None
    token: str | None


def _credentials(request: h11.Request, query: str, path_token: str | None) -> _Credentials:
    authorization = (header(request, b"authorization") or b"").decode("latin-1")
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        if session_tokens.looks_like_token(value):
            return _Credentials(True, None, value)
        return _Credentials(True, value, None)
    if path_token is not None:
        return _Credentials(False, None, path_token)
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
    """The query less our token, the rest byte for byte (``/json/new?about:blank`` is no form)."""
    return "&".join(part for part in query.split("&") if part.split("=", 1)[0] != TOKEN_PARAM)


def _strip_cookie(request: h11.Request) -> bytes | None:
    raw = header(request, b"cookie")
    if raw is None:
        return None
    kept = [c for c in raw.split(b";") if c.strip().split(b"=", 1)[0] != TOKEN_PARAM.encode()]
    return b";".join(kept) if kept else None


@dataclass
class _Caller:
    """Who a routed request speaks for, as far as it is known (for the audit trail)."""

    principal: Principal | None = None
    claims: Claims | None = None
    failure: AuthFailure | None = None

    def account_id(self) -> str:
        if self.principal is not None:
            return self.principal.account_id
        assert self.claims is not None
        return self.claims.account_id

    def actor(self) -> dict[str, object]:
        if self.claims is not None:
            return {
                "account_id": self.claims.account_id,
                "actor_type": "session_token",
                "actor_id": None,
                "actor_name": None,
                "key_id": None,
                "auth_method": "session_token",
            }
        return actor_fields(self.principal, self.failure)


@dataclass(frozen=True)
class _Audit:
    """One routed request's audit event, written once its status is known."""

    caller: _Caller
    action: str
    session_id: str
    method: str
    path: str
    peer: str

    def row(self, status: int, error_code: str | None = None) -> Row:
        denied = status in (401, 403)
        return {
            "time": time.time(),
            **self.caller.actor(),
            "action": self.action[:64],
            "resource_type": "session",
            "resource_id": self.session_id,
            "method": self.method[:8],
            "path": self.path[:512],
            "source_ip": self.peer[:64] or None,
            "result": "denied" if denied else ("success" if status < 400 else "failure"),
            "status": status,
            "error_code": error_code,
        }


class EdgeRouter:
    def __init__(self, service: SessionService, token_keys: TokenKeys) -> None:
        self.service = service
        self.store = service.store
        self.domain = service.config.session_domain
        self.cluster_token = service.config.token.get_secret_value()
        self.token_keys = token_keys
        self.authenticator = Authenticator(self.store, jwt_verifier(service.config))
        self._activity_written: dict[str, float] = {}

    async def route(self, request: h11.Request, peer: str) -> Handler | None:
        target = session_target(bytes(request.target), header(request, b"host"), self.domain)
        if target is None:
            return None
        method = request.method.decode("ascii", "replace").upper()
        websocket = is_upgrade(request)
        needed = requirement(target.endpoint, method, websocket)
        if websocket:
            origin = header(request, b"origin")
            public_host = header(request, b"host")
            check_origin(
                origin.decode("latin-1") if origin is not None else None,
                public_host.decode("latin-1") if public_host is not None else None,
                self.service.public_url,
                self.service.config.allowed_origins,
            )
        caller = _Caller()
        audit = _Audit(caller, needed.action or "session.endpoint", target.session_id, method, _path(request), peer)
        try:
            credentials = _credentials(request, target.query, target.path_token)
            await self._authorize(caller, request, credentials, target.session_id, needed.scope)
            row = await self.service.get(caller.account_id(), target.session_id)
            if caller.claims is not None:
                await token_revocation.check_alive(self.store, caller.claims, row)
        except (errors.Unauthorized, errors.Forbidden) as exc:
            if caller.principal is not None or caller.claims is not None or caller.failure is not None:
                await append_event(self.store, audit.row(exc.status, exc.code))
            raise
        if row["status"] != "running":
            raise errors.Conflict(f"session {row['id']} is {row['status']}", code="session_not_running")
        host = await self.store.run(self.store.host, row["host_id"])
        if host is None:
            raise errors.Unavailable("the session's host is gone", code="host_gone")
        await self._record_activity(row["id"])
        cdp_query = self._cdp_query(caller, credentials, target, row) if is_cdp(target.endpoint) else None
        return partial(self._forward, host["url"], target, credentials, audit if needed.action else None, cdp_query)

    def _cdp_query(self, caller: _Caller, credentials: _Credentials, target: SessionTarget, row: Row) -> str:
        """What the CDP answers' WebSocket URLs carry so that a client given only them gets in.

        A token in the path is in their prefix already; a session token is
        passed on; an API key or JWT is never put in a URL: a session token is
        minted for the caller instead (sessions.write, all CDP needs; 15
        minutes; revoked with the caller's key or membership).
        """
        if target.path_token is not None:
            return ""
        token = credentials.token
        if token is None:
            caller_principal = caller.principal
            assert caller_principal is not None
            claims = Claims(
                target.session_id,
                caller_principal.account_id,
                session_tokens.DEFAULT_SCOPES,
                time.time() + min(session_tokens.DEFAULT_TTL, self.service.config.session_token_max_ttl),
                generation=row["token_generation"],
                key_id=caller_principal.key_id,
                user_id=caller_principal.user_id,
            )
            token = session_tokens.mint(self.token_keys.signing, claims)
        return urlencode({TOKEN_PARAM: token})

    async def _authorize(
        self, caller: _Caller, request: h11.Request, credentials: _Credentials, session_id: str, scope: str
    ) -> None:
        if credentials.token is not None:
            claims: Claims = session_tokens.verify(self.token_keys.accepted, credentials.token, time.time())
            caller.claims = claims
            if claims.session_id != session_id:
                raise errors.Forbidden("this session token is for another session", code="wrong_session")
            claims.require(scope)
            return
        account = header(request, ACCOUNT_HEADER.lower().encode())
        try:
            caller.principal = await self.authenticator.authenticate(
                f"Bearer {credentials.api_key}", account.decode("latin-1") if account else None
            )
        except AuthFailure as exc:
            caller.failure = exc
            raise
        caller.principal.require(scope)

    async def _record_activity(self, session_id: str) -> None:
        now = time.time()
        if now - self._activity_written.get(session_id, 0.0) < _ACTIVITY_WRITE_INTERVAL:
            return
        self._activity_written[session_id] = now
        if len(self._activity_written) > 10_000:
            self._activity_written = {k: v for k, v in self._activity_written.items() if now - v < 60}
        await self.store.run(self.store.record_activity, session_id, now)

    async def _forward(
        self,
        host_url: str,
        target: SessionTarget,
        credentials: _Credentials,
        audit: _Audit | None,
        cdp_query: str | None,
        down: Downstream,
        request: h11.Request,
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
        if cdp_query is not None:
            add.append((CDP_QUERY, cdp_query.encode()))
        if not credentials.header_used and (client_auth := header(request, b"authorization")) is not None:
            add.append((CLIENT_AUTHORIZATION, client_auth))
        if (cookie := _strip_cookie(request)) is not None:
            add.append((b"cookie", cookie))
        drop = [b"authorization", b"cookie", CLIENT_AUTHORIZATION, b"x-forwarded-for", b"x-forwarded-host",
                b"x-forwarded-proto", b"x-forwarded-prefix", CDP_QUERY, ACCOUNT_HEADER.lower().encode()]  # fmt: skip
        forwarded = h11.Request(
            method=request.method, target=agent_target.encode("latin-1"), headers=forward_headers(request, drop, add)
        )

        async def record(status: int) -> None:
            if audit is not None:
                await append_event(self.store, audit.row(status))

        try:
            agent = await _connect(host_url)
        except OSError as exc:
            error = errors.BadGateway(f"the session's host is unreachable: {exc}", code="host_unreachable")
            await down.send_error(error)
            await record(error.status)
            return
        async with agent:
            try:
                await relay(down, agent, forwarded, on_response=record)
            except ClientGone:
                pass
            except trio.BrokenResourceError:
                await down.send_error(errors.BadGateway("the session's host closed the connection", code="host_error"))


def _path(request: h11.Request) -> str:
    """The request's path for the audit trail: never its query nor a token in the path."""
    return session_tokens.redact_path(bytes(request.target).decode("latin-1").partition("?")[0])


async def _connect(url: str) -> trio.SocketStream:
    parts = urlsplit(url)
    if parts.hostname is None:
        raise OSError(f"bad host URL {url!r}")
    with trio.move_on_after(_CONNECT_TIMEOUT):
        return await trio.open_tcp_stream(parts.hostname, parts.port or 80)
    raise OSError("connect timed out")
