"""A raw TCP tunnel to a port in a sandbox, over a WebSocket (``chaser port-forward``).

Binary messages carry the bytes both ways, unchanged. The text message
``ping`` is answered with ``pong`` and keeps the lease alive; a tunnel
whose client sends nothing, not even pings, for the keepalive timeout is
closed like any other lease. The port is connected before the handshake is
accepted, so a port nobody listens on is a 502 with a JSON error.
"""

from __future__ import annotations

import trio

from agent.endpoints.asgi import Receive, Send, WebSocket
from agent.endpoints.failures import api_error
from agent.runtimes.base import RuntimeFailure
from agent.sandboxes.lease_keeper import LeaseKeeper
from agent.sandboxes.manager import SandboxManager

_CHUNK = 1 << 16
CLOSE_NORMAL = 1000
CLOSE_ENDED = 4000


async def serve_tunnel(
    receive: Receive, send: Send, sandbox_id: str, port: int, manager: SandboxManager, keeper: LeaseKeeper
) -> None:
    manager.running(sandbox_id)
    async with keeper.hold(sandbox_id, "tunnel") as lease:
        try:
            stream = await manager.runtime.open_port(sandbox_id, port)
        except RuntimeFailure as exc:
            raise api_error(exc, sandbox_id) from None
        async with stream:
            ws = await WebSocket.accept(receive, send)

            async def inbound() -> None:
                while (data := await ws.receive()) is not None:
                    keeper.seen(lease)
                    if isinstance(data, str):
                        if data == "ping":
                            await ws.send("pong")
                        continue
                    keeper.active(lease)
                    await stream.send_all(data)
                nursery.cancel_scope.cancel()

            async def outbound() -> None:
                try:
                    while chunk := await stream.receive_some(_CHUNK):
                        keeper.active(lease)
                        await ws.send(bytes(chunk))
                except trio.BrokenResourceError:
                    pass
                await ws.close(CLOSE_NORMAL, "the program closed the connection")
                nursery.cancel_scope.cancel()

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(inbound)
                    nursery.start_soon(outbound)
            except trio.BrokenResourceError:
                await ws.close(CLOSE_NORMAL, "the program closed the connection")
    if lease.ended_because is not None:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await ws.close(CLOSE_ENDED, lease.ended_because)
