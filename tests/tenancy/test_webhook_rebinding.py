"""Webhook SSRF by DNS rebinding, and through proxy variables: both refused.

The receiver's name is answered by a resolver this test installs through
trio's hostname-resolver hook (DNS is the third party here): first with the
allowed receiver's address, then with an internal service's. A delivery
must reach only the address that was vetted. The scheduler's environment
also names an HTTP proxy, which a delivery must not use.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import wait_until
from tests.tenancy.conftest import Issuer, open_tenants
from tests.tenancy.local_http import WebhookReceiver, serve
from tests.tenancy.test_webhooks import make_webhook

NAME = "hooks.rebind.test.invalid"
RECEIVER = "127.0.0.2"  # the range the operator allows
INTERNAL = "127.0.0.1"  # what the tenant is after


class RebindingResolver(trio.abc.HostnameResolver):
    """Answers NAME with RECEIVER the first time and INTERNAL after; other names as usual."""

    def __init__(self) -> None:
        self.answers = 0

    async def getaddrinfo(self, host: bytes | None, port: bytes | str | int | None, *args: Any) -> Any:
        if host == NAME.encode():
            self.answers += 1
            address = RECEIVER if self.answers == 1 else INTERNAL
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 80)))]
        return await trio.to_thread.run_sync(socket.getaddrinfo, host, port, *args)

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
        return await trio.to_thread.run_sync(socket.getnameinfo, sockaddr, flags)


@pytest.fixture
def receivers() -> Iterator[tuple[WebhookReceiver, WebhookReceiver, WebhookReceiver, int]]:
    """The allowed receiver and the internal service on one port, and a proxy elsewhere."""
    allowed, internal, proxy = WebhookReceiver(), WebhookReceiver(), WebhookReceiver()
    with ExitStack() as stack:
        port = int(stack.enter_context(serve(internal.handle, INTERNAL)).rsplit(":", 1)[1])
        stack.enter_context(serve(allowed.handle, RECEIVER, port))
        proxy.url = stack.enter_context(serve(proxy.handle))
        yield allowed, internal, proxy, port


async def test_delivery_connects_only_to_the_vetted_address(
    nursery: trio.Nursery,
    tmp_path: Path,
    images_dir: Path,
    issuer: Issuer,
    receivers: tuple[WebhookReceiver, WebhookReceiver, WebhookReceiver, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    allowed, internal, proxy, port = receivers
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(variable, proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    resolver = RebindingResolver()
    trio.socket.set_custom_hostname_resolver(resolver)
    running, stack = await open_tenants(
        nursery,
        tmp_path,
        images_dir,
        f"sqlite:///{tmp_path / 'db'}",
        issuer,
        webhook_block_private_networks=True,
        webhook_allowed_networks=[f"{RECEIVER}/32"],
    )
    try:
        async with stack:
            api = running.system.client
            hook = await make_webhook(api, f"http://{NAME}:{port}/hooks/chaser", ["session.created"])
            assert (await api.post(f"/v1/webhooks/{hook['id']}/ping")).status_code == 202

            async def attempted() -> bool:
                log = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
                return bool(log and log[0]["attempts_log"])

            await wait_until(attempted)
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    assert internal.received == [], "the rebound name reached the internal service"
    assert proxy.received == [], "the delivery went through the environment's proxy"
    assert [r.headers["host"] for r in allowed.received] == [f"{NAME}:{port}"]
