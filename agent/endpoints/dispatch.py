"""The agent's session endpoints, dispatched ahead of the Quart API app.

Under ``/v1/sandboxes/<id>/`` (reached through the scheduler's edge router,
host token required like every agent route):

    GET        ``                  the sandbox, its leases and terminals
    GET        pty                 its terminals
    WebSocket  pty                 PTY multiplexer (``agent.endpoints.pty``)
    WebSocket  exec                streaming exec (``agent.endpoints.exec_stream``)
    WebSocket  tunnel/<port>       raw TCP tunnel (``agent.endpoints.tunnel``)
    HTTP       files/..., fs/...   file transfer and operations (``agent.endpoints.files``)

``ports/<port>/...`` never gets here: the front passes it to
``agent.endpoints.ports`` as bytes. Everything else goes to the Quart app.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from agent.config import AgentConfig
from agent.endpoints.asgi import Message, Receive, Scope, Send, WebSocket, send_error, send_json
from agent.endpoints.exec_stream import serve_exec
from agent.endpoints.files import Files
from agent.endpoints.pty import PtyHub, serve_pty
from agent.endpoints.tunnel import serve_tunnel
from agent.sandboxes.lease_keeper import LeaseKeeper
from agent.sandboxes.manager import SandboxManager
from chaser.wire import errors
from chaser.wire.frames import MAX_CLIENT_FRAME

log = logging.getLogger(__name__)

_SESSION_PATH = re.compile(r"^/v1/sandboxes/(?P<id>[0-9a-f-]{36})/(?P<rest>.*)$", re.S)
_TUNNEL = re.compile(r"^tunnel/(?P<port>\d{1,5})$")

AsgiApp = Callable[..., Awaitable[None]]


class Endpoints:
    def __init__(
        self, config: AgentConfig, manager: SandboxManager, keeper: LeaseKeeper, ptys: PtyHub, app: AsgiApp
    ) -> None:
        self.config = config
        self.manager = manager
        self.keeper = keeper
        self.ptys = ptys
        self.app = app
        self.files = Files(manager, keeper)
        self._token = config.token.get_secret_value().encode()

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, presented = bytes(value).partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(presented.strip(), self._token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _SESSION_PATH.match(scope.get("path", "")) if scope["type"] in ("http", "websocket") else None
        try:
            handler = self._handler(scope, match["id"], match["rest"]) if match else None
        except errors.ApiError as exc:
            await send_error(scope, send, exc)
            return
        if handler is None:
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] in ("http.response.start", "websocket.accept")
            await send(message)

        try:
            if not self._authorized(scope):
                raise errors.Unauthorized("missing or wrong host token")
            await handler(receive, tracked_send)
        except errors.ApiError as exc:
            if started:
                raise
            await send_error(scope, send, exc)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s", scope.get("path"))
            await send_error(scope, send, errors.ApiError("internal error"))

    def _handler(self, scope: Scope, sandbox_id: str, rest: str) -> Callable[[Receive, Send], Awaitable[None]] | None:
        websocket = scope["type"] == "websocket"
        method = scope.get("method", "GET")
        if websocket and rest == "pty":
            return lambda receive, send: self._pty(sandbox_id, receive, send)
        if websocket and rest == "exec":
            return lambda receive, send: self._exec(sandbox_id, receive, send)
        if websocket and (tunnel := _TUNNEL.match(rest)):
            port = _port(tunnel["port"])
            return lambda receive, send: serve_tunnel(receive, send, sandbox_id, port, self.manager, self.keeper)
        if websocket:
            return lambda receive, send: _not_found(rest)
        if rest.startswith(("files/", "fs/")):
            return lambda receive, send: self.files.handle(scope, receive, send, sandbox_id, rest)
        if rest in ("", "pty") and method == "GET":
            return lambda receive, send: self._info(sandbox_id, rest, send)
        return None

    async def _pty(self, sandbox_id: str, receive: Receive, send: Send) -> None:
        self.manager.running(sandbox_id)
        ws = await WebSocket.accept(receive, send, MAX_CLIENT_FRAME)
        await serve_pty(
            ws,
            sandbox_id,
            self.ptys,
            self.keeper,
            max_channels=self.config.pty_max_channels,
            slow_timeout=self.config.slow_client_timeout,
        )

    async def _exec(self, sandbox_id: str, receive: Receive, send: Send) -> None:
        self.manager.running(sandbox_id)
        ws = await WebSocket.accept(receive, send, MAX_CLIENT_FRAME)
        await serve_exec(ws, sandbox_id, self.manager, self.keeper)

    async def _info(self, sandbox_id: str, rest: str, send: Send) -> None:
        sandbox = self.manager.get(sandbox_id)
        terminals = [t.to_json() for t in self.ptys.of(sandbox_id)]
        if rest == "pty":
            await send_json(send, 200, {"terminals": terminals})
            return
        info: dict[str, Any] = {
            **sandbox.to_json(),
            "leases": [lease.to_json() for lease in self.keeper.table.of(sandbox_id)],
            "terminals": terminals,
        }
        await send_json(send, 200, info)


def _port(raw: str) -> int:
    port = int(raw)
    if not 1 <= port <= 65535:
        raise errors.InvalidInput(f"port {port} is not between 1 and 65535", code="invalid_port")
    return port


async def _not_found(rest: str) -> None:
    raise errors.NotFound(f"no WebSocket endpoint {rest!r}")
