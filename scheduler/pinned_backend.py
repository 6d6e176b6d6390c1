"""An httpcore network backend that dials addresses already vetted, not the URL's host.

A webhook's host is resolved and checked once (``DestinationPolicy.resolve``);
resolving it again to connect would let a name answer differently the second
time (DNS rebinding) and reach an internal service. The connection keeps the
URL's host for the ``Host`` header, SNI and certificate checks: only the
address it dials is fixed.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

import httpcore


class PinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, addresses: Sequence[str]) -> None:
        if not addresses:
            raise ValueError("no address to dial")
        self.addresses = tuple(addresses)
        self._backend = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Each vetted address in turn (the resolver's order); the last failure if none answers."""
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in self.addresses:
            try:
                return await self._backend.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are delivered over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)
