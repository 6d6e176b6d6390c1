"""A test-made "outside world": a network namespace an agent's uplink leads into.

Sessions' egress in tests must never leave this machine. So tests give the
agent an uplink that is one end of a veth whose other end is in a namespace
made here, which owns every address the tests connect to: a web server's
(in 203.0.113.0/24, TEST-NET-3), a stand-in for the cloud metadata
service at 169.254.169.254, and hosts on private networks (another
machine of the data centre's LAN, a CGNAT peer). Servers listen on sockets made inside that
namespace and are served by this process; each remembers who connected.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
from pyroute2 import IPRoute, netns

WEB = "203.0.113.80"
OTHER_WEB = "203.0.113.81"
METADATA = "169.254.169.254"
LAN = "192.168.77.10"
CGNAT = "100.64.7.10"


@dataclass
class World:
    name: str  # of the netns, and of the uplink (its host end)
    uplink_ip: str  # the host end's address: sessions' traffic is masqueraded to it
    gateway: str  # the world's end
    peers: list[str] = field(default_factory=list)  # source address of every connection served


def _make(name: str, uplink_ip: str, gateway: str) -> None:
    netns.create(name)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=name, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
            (index,) = ipr.link_lookup(ifname=name)
            ipr.addr("add", index=index, address=uplink_ip, prefixlen=30)
            ipr.link("set", index=index, state="up")
        with IPRoute(netns=f"/run/netns/{name}", flags=0) as inside:
            inside.link("set", index=1, state="up")
            (eth,) = inside.link_lookup(ifname="eth0")
            inside.addr("add", index=eth, address=gateway, prefixlen=30)
            for address in (WEB, OTHER_WEB, METADATA, LAN, CGNAT):
                inside.addr("add", index=1, address=address, prefixlen=32)
            inside.link("set", index=eth, state="up")
    except BaseException:
        _remove(name)
        raise


def _remove(name: str) -> None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            ipr.link("del", index=found[0])
    netns.remove(name)


def _listening_socket(name: str, address: str, port: int) -> socket.socket:
    sock = netns.create_socket(name, socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(16)
    return sock


async def listen(world: World, address: str, port: int) -> trio.socket.SocketType:
    """A listening TCP socket inside the world, for a test's own server."""
    raw = await trio.to_thread.run_sync(_listening_socket, world.name, address, port)
    return trio.socket.from_stdlib_socket(raw)


async def _serve(world: World, listener: trio.socket.SocketType, greeting: bytes) -> None:
    """Answer each connection with a tiny HTTP response naming the server."""
    while True:
        conn, (peer, _) = await listener.accept()
        world.peers.append(peer)
        with conn:
            with trio.move_on_after(5):
                await conn.recv(65536)
            body = greeting + b"\n"
            await conn.send(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


@asynccontextmanager
async def open_world(servers: list[tuple[str, int]]) -> AsyncIterator[World]:
    """Make the world with ``servers`` (address, port) listening; remove it all on exit."""
    name = f"tw{secrets.token_hex(4)}"
    link = f"198.51.100.{secrets.randbelow(64) * 4}"
    base = link.rsplit(".", 1)
    uplink_ip, gateway = f"{base[0]}.{int(base[1]) + 1}", f"{base[0]}.{int(base[1]) + 2}"
    await trio.to_thread.run_sync(_make, name, uplink_ip, gateway)
    world = World(name, uplink_ip, gateway)
    listeners: list[trio.socket.SocketType] = []
    try:
        async with trio.open_nursery() as nursery:
            for address, port in servers:
                raw = await trio.to_thread.run_sync(_listening_socket, name, address, port)
                listeners.append(trio.socket.from_stdlib_socket(raw))
                nursery.start_soon(_serve, world, listeners[-1], f"world {address}:{port}".encode())
            yield world
            nursery.cancel_scope.cancel()
    finally:
        for listener in listeners:
            listener.close()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove, name)


async def connect_inside(name: str, address: str, port: int) -> bytes:
    """A request from inside the world itself (to check a server there is up)."""
    raw = await trio.to_thread.run_sync(lambda: netns.create_socket(name, socket.AF_INET, socket.SOCK_STREAM))
    with trio.socket.from_stdlib_socket(raw) as sock:
        await sock.connect((address, port))
        await sock.send(b"GET / HTTP/1.0\r\n\r\n")
        return await sock.recv(65536)
