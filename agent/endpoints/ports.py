"""HTTP and WebSocket traffic to a port in a sandbox, passed through as bytes.

``/v1/sandboxes/<id>/ports/<port>/<rest>`` reaches this agent's front
(``serving.front``), which hands it here instead of to the API app: the
request goes, rewritten to ``/<rest>``, to whatever listens on ``port`` on
the sandbox's loopback, and the answer comes back streaming; a WebSocket is
spliced after its 101, never decoded. A port nobody listens on is a 502
with a JSON error, at once. A forwarded WebSocket holds a lease while open.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from functools import partial

import h11
import trio

from agent.endpoints.failures import api_error
from agent.runtimes.base import RuntimeFailure
from agent.sandboxes.lease_keeper import LeaseKeeper
from agent.sandboxes.manager import SandboxManager
from chaser.wire import errors
from serving.front import Handler
from serving.relay import ClientGone, Downstream, forward_headers, header, is_upgrade, relay

_PORT_TARGET = re.compile(rb"^/v1/sandboxes/([0-9a-f-]{36})/ports/(\d{1,5})(/[^?]*)?(\?.*)?$", re.S)
# The client's own Authorization, kept aside by the router when it was
# meant for the program (the router authenticated the client otherwise).
CLIENT_AUTHORIZATION = b"x-chaser-client-authorization"


class PortForwarding:
    def __init__(self, token: bytes, manager: SandboxManager, keeper: LeaseKeeper) -> None:
        self.token = token
        self.manager = manager
        self.keeper = keeper

    async def route(self, request: h11.Request, _peer: str) -> Handler | None:
        match = _PORT_TARGET.match(bytes(request.target))
        if match is None:
            return None
        scheme, _, presented = (header(request, b"authorization") or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(presented.strip(), self.token):
            raise errors.Unauthorized("missing or wrong host token")
        sandbox_id, port = match[1].decode(), int(match[2])
        if not 1 <= port <= 65535:
            raise errors.InvalidInput(f"port {port} is not between 1 and 65535", code="invalid_port")
        self.manager.running(sandbox_id)
        target = (match[3] or b"/") + (match[4] or b"")
        return partial(self._forward, sandbox_id, port, target)

    async def _forward(self, sandbox_id: str, port: int, target: bytes, down: Downstream, request: h11.Request) -> None:
        headers = forward_headers(request, drop=[b"authorization", CLIENT_AUTHORIZATION])
        if (client_auth := header(request, CLIENT_AUTHORIZATION)) is not None:
            headers.append((b"authorization", client_auth))
        forwarded = h11.Request(method=request.method, target=target, headers=headers)
        self.keeper.touch(sandbox_id)
        if is_upgrade(request):
            async with self.keeper.hold(sandbox_id, "port", keepalive=False) as lease:
                await self._relay(sandbox_id, port, down, forwarded, on_traffic=lambda: self.keeper.active(lease))
        else:
            await self._relay(sandbox_id, port, down, forwarded)
        self.keeper.touch(sandbox_id)

    async def _relay(
        self,
        sandbox_id: str,
        port: int,
        down: Downstream,
        request: h11.Request,
        on_traffic: Callable[[], None] | None = None,
    ) -> None:
        try:
            upstream = await self.manager.runtime.open_port(sandbox_id, port)
        except RuntimeFailure as exc:
            await down.send_error(api_error(exc, sandbox_id))
            return
        async with upstream:
            try:
                await relay(down, upstream, request, on_traffic=on_traffic)
            except ClientGone:
                pass
            except trio.BrokenResourceError:
                error = errors.BadGateway(f"the program on port {port} closed the connection", code="port_closed")
                await down.send_error(error)  # if no response began; else the connection just ends
