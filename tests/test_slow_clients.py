"""Slow and greedy clients against the scheduler's front: each is cut off, the others are served.

The attacks: slowloris (a head sent a byte a second), a body that never
finishes, one address opening connections until none are left, and a
flood of requests with one key or from one address. Clients on other
loopback addresses (127.0.0.x) stand for everyone else. Only a scheduler
runs: the front is the point.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from scheduler.auth import new_secret
from scheduler.main import serve as serve_scheduler
from tests.conftest import Server, scheduler_config, wait_until


@asynccontextmanager
async def connection(port: int, source: str) -> AsyncIterator[trio.SocketStream]:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    try:
        yield stream
    finally:
        await stream.aclose()


async def read_to_end(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    with trio.fail_after(30):
        while data := await stream.receive_some(65536):
            received += data
    return received


async def healthy(url: str, source: str) -> bool:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=10) as client:
        return (await client.get("/healthz")).status_code == 200


async def test_slow_and_greedy_clients_are_cut_off(nursery: trio.Nursery, tmp_path: Path) -> None:
    api_key = new_secret()
    config = scheduler_config(
        f"sqlite:///{tmp_path / 'chaser.db'}",
        secrets.token_urlsafe(32),
        api_key,
        header_timeout=1.0,
        body_timeout=1.0,
        max_connections_per_address=8,
        rate_limits={"per_credential": {"rate": 0.2, "burst": 5}, "per_address": {"rate": 0.2, "burst": 30}},
    )
    scheduler = Server(serve_scheduler, config)
    url = await scheduler.start(nursery)
    port = int(url.rsplit(":", 1)[1])

    # Slowloris: a head at a byte a second is answered 408 and closed, long before it is whole.
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"a" * 200 + b"\r\n\r\n"
    sent = 0
    async with connection(port, "127.0.0.2") as slow:

        async def trickle() -> None:
            nonlocal sent
            for byte in head:
                try:
                    await slow.send_all(bytes([byte]))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                sent += 1
                await trio.sleep(1)

        async with trio.open_nursery() as trickling:
            trickling.start_soon(trickle)
            assert await healthy(url, "127.0.0.2")  # others, even from the same address, are served meanwhile
            answer = await read_to_end(slow)
            trickling.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer
    assert sent < len(head)

    # A body that never finishes: 408, closed.
    async with connection(port, "127.0.0.2") as stalled:
        await stalled.send_all(
            b"POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + api_key.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name": '
        )
        answer = await read_to_end(stalled)
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer

    # One address holds at most 8 connections; the 9th is closed at once, other addresses are served.
    async with connection(port, "127.0.0.3") as probe:
        await probe.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200" in await probe.receive_some(65536)
    held: list[trio.SocketStream] = []
    for _ in range(8):
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.3", 0))
        await sock.connect(("127.0.0.1", port))
        held.append(trio.SocketStream(sock))
    async with connection(port, "127.0.0.3") as ninth:
        await wait_until(lambda: _closed(ninth))
    assert await healthy(url, "127.0.0.4")
    for stream in held:
        await stream.aclose()
    await wait_until(lambda: healthy(url, "127.0.0.3"))

    # A flood with one key: 429 with Retry-After once its bucket is empty; another key is unaffected.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.5")
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=10) as client:
        statuses = []
        for _ in range(10):
            response = await client.get("/v1/sessions", headers={"Authorization": f"Bearer {api_key}"})
            statuses.append(response.status_code)
        # (The key's bucket of 5 paid for the stalled body above too.)
        assert statuses[0] == 200 and statuses[-1] == 429 and set(statuses) == {200, 429}, statuses
        assert response.json()["error"]["code"] == "rate_limited" and int(response.headers["retry-after"]) >= 1
        other = await client.get("/v1/sessions", headers={"Authorization": f"Bearer {new_secret()}"})
        assert other.status_code == 401  # served (and refused for its own reason), not rate limited

    # A flood from one address, without credentials: 401s, then 429s; another address is served.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.6")
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=10) as client:
        statuses = [(await client.get("/v1/sessions")).status_code for _ in range(40)]
    assert statuses[0] == 401 and statuses[-1] == 429 and set(statuses) == {401, 429}, statuses
    assert await healthy(url, "127.0.0.7")
    await scheduler.stop()


async def _closed(stream: trio.SocketStream) -> bool:
    try:
        with trio.move_on_after(0.5):
            return await stream.receive_some(1) == b""
    except trio.BrokenResourceError:
        return True
    return False
