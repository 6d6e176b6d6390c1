"""Relaying one HTTP/1.1 request to an upstream, as a stream of bytes.

The edge router (scheduler to agent) and the agent's port forwarding
(agent to a program in the sandbox) both pass requests on without reading
them whole: the head is parsed and rewritten (h11), the body and the
response go through in chunks as they come, with back-pressure (a slow
reader slows the writer; nothing piles up here). A WebSocket (any
``Upgrade``) that the upstream accepts with 101 becomes a plain splice of
the two connections: frames pass through untouched, never decoded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import cast

import h11
import trio

from chaser.wire import errors
from serving.error_answer import error_answer

RECEIVE_SIZE = 1 << 20
MAX_HEAD = 64 * 1024
# A peer that takes no bytes for this long is cut off: a client that stops
# reading cannot pin a connection (and what it holds upstream) for ever.
SEND_TIMEOUT = 60.0

# Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}


async def send_all(stream: trio.abc.SendStream, data: bytes | bytearray) -> None:
    """``stream.send_all`` within ``SEND_TIMEOUT``; a stalled peer is a broken one."""
    with trio.move_on_after(SEND_TIMEOUT):
        await stream.send_all(data)
        return
    raise trio.BrokenResourceError(f"the peer took no data for {SEND_TIMEOUT:g}s")


class Downstream:
    """The client side of a connection: its stream and the server-role h11 state."""

    def __init__(self, stream: trio.abc.Stream, peer: str) -> None:
        self.stream = stream
        self.peer = peer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return cast("h11.Event | type[h11.PAUSED]", event)
            data = await self.stream.receive_some(RECEIVE_SIZE)
            self.conn.receive_data(bytes(data))

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await send_all(self.stream, data)

    async def send_error(self, error: errors.ApiError, extra_headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        """A JSON error response, if a response can still be started; the connection then closes."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        answer = error_answer(error)
        headers = [*answer.headers, (b"connection", b"close"), *extra_headers]
        await self.send(h11.Response(status_code=answer.status, headers=headers))
        await self.send(h11.Data(data=answer.body))
        await self.send(h11.EndOfMessage())

    def reusable(self) -> bool:
        """Whether another request may follow on this connection; readies it for one if so."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            try:
                self.conn.start_next_cycle()
            except h11.LocalProtocolError:
                return False
            return True
        return False


def header(request: h11.Request, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return None


def is_upgrade(request: h11.Request) -> bool:
    connection = header(request, b"connection") or b""
    return header(request, b"upgrade") is not None and b"upgrade" in connection.lower()


def forward_headers(
    request: h11.Request, drop: Iterable[bytes] = (), add: Iterable[tuple[bytes, bytes]] = ()
) -> list[tuple[bytes, bytes]]:
    """The request's end-to-end headers for the next hop, minus ``drop``, plus ``add``."""
    connection = header(request, b"connection") or b""
    named = {t.strip().lower() for t in connection.split(b",") if t.strip()}
    skip = _HOP_BY_HOP | named | set(drop)
    out = [(bytes(k), bytes(v)) for k, v in request.headers if k not in skip]
    if (header(request, b"transfer-encoding") or b"").lower().endswith(b"chunked"):
        out.append((b"transfer-encoding", b"chunked"))
    if is_upgrade(request):
        out += [(b"connection", b"upgrade"), (b"upgrade", header(request, b"upgrade") or b"")]
    return [*out, *add]


def _response_headers(headers: Iterable[tuple[bytes, bytes]], upgrade: bool) -> list[tuple[bytes, bytes]]:
    keep_upgrade = {b"connection", b"upgrade"} if upgrade else set()
    out = []
    for key, value in headers:
        if key in _HOP_BY_HOP and key not in keep_upgrade:
            if key == b"transfer-encoding" and value.lower().endswith(b"chunked"):
                out.append((key, b"chunked"))
            continue
        out.append((bytes(key), bytes(value)))
    return out


# What a peer that goes away (or breaks the protocol) makes a relay raise.
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError)


class ClientGone(Exception):
    """The client closed its connection before the response was complete."""


async def relay(
    down: Downstream,
    upstream: trio.abc.Stream,
    request: h11.Request,
    *,
    response_headers: Iterable[tuple[bytes, bytes]] = (),
    on_traffic: Callable[[], None] | None = None,
    on_response: Callable[[int], Awaitable[None]] | None = None,
) -> bool:
    """Send ``request`` (already rewritten) and its body upstream; the response back down.

    ``on_response`` hears the response's status as soon as its head has gone
    down (101 for a switch, before the splice).

    Returns when the exchange is over, True if the upstream connection may
    carry another request: the response was relayed whole, or the two
    connections were spliced after a 101 and one side closed (then False).
    Raises ``trio.BrokenResourceError`` if the upstream failed (the caller
    answers 502 if no response began), ``ClientGone`` if the client hung up
    first (the upstream then sees its connection close, and stops working
    for nobody).
    """
    up = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    try:
        await send_all(upstream, up.send(request))
    except _BROKEN as exc:
        raise trio.BrokenResourceError(f"upstream: {exc}") from None
    switched = False
    gone = False
    failed: BaseException | None = None
    # Errors are caught inside the tasks: a nursery would wrap them in an
    # ExceptionGroup, which callers (and the server's accept loop) must
    # never see for a peer that merely went away.
    async with trio.open_nursery() as nursery:

        async def body_up() -> None:
            nonlocal gone
            if not await _body_up(down, upstream, up):
                gone = True
                nursery.cancel_scope.cancel()

        nursery.start_soon(body_up)
        try:
            switched = await _response_down(down, upstream, up, request, list(response_headers), on_response)
        except _BROKEN as exc:
            failed = exc
        # An early response (an error before the body was read) ends the
        # exchange; the client connection is then not reused.
        nursery.cancel_scope.cancel()
    if gone:
        raise ClientGone()
    if failed is not None:
        raise trio.BrokenResourceError(str(failed) or type(failed).__name__) from None
    if switched:
        await splice(down, upstream, up.trailing_data[0], on_traffic)
        return False
    return up.our_state is h11.DONE and up.their_state is h11.DONE


async def _body_up(down: Downstream, upstream: trio.abc.Stream, up: h11.Connection) -> bool:
    """Pass the request body up, then watch for the client leaving; False once it has.

    An upstream that stops taking the body ends this quietly: the response
    side learns of it (an early response, or a broken connection).
    """
    try:
        while down.conn.their_state is h11.SEND_BODY:
            event = await down.next_event()
            if isinstance(event, h11.ConnectionClosed):
                return False
            try:
                if isinstance(event, h11.Data):
                    await send_all(upstream, up.send(h11.Data(data=event.data)))
                elif isinstance(event, h11.EndOfMessage):
                    await send_all(upstream, up.send(h11.EndOfMessage()))
            except _BROKEN:
                return True
        # The request is in; notice a client that hangs up while it waits.
        while len(down.conn.trailing_data[0]) < MAX_HEAD:
            data = await down.stream.receive_some(RECEIVE_SIZE)
            if not data:
                return False
            down.conn.receive_data(bytes(data))
    except _BROKEN:  # the client reset the connection, or broke HTTP mid-body
        return False
    return True


async def _response_down(
    down: Downstream,
    upstream: trio.abc.Stream,
    up: h11.Connection,
    request: h11.Request,
    extra: list[tuple[bytes, bytes]],
    on_response: Callable[[int], Awaitable[None]] | None,
) -> bool:
    """Relay the response; True if it switched protocols (101)."""
    upgrade = is_upgrade(request)
    while True:
        event = up.next_event()
        if event is h11.NEED_DATA:
            data = await upstream.receive_some(RECEIVE_SIZE)
            up.receive_data(bytes(data))
            continue
        if isinstance(event, h11.InformationalResponse):
            if event.status_code == 101 and upgrade:
                headers = _response_headers(event.headers, upgrade=True)
                await down.send(h11.InformationalResponse(status_code=101, headers=headers, reason=event.reason))
                if on_response is not None:
                    await on_response(101)
                return True
            if event.status_code == 100:
                await down.send(h11.InformationalResponse(status_code=100, headers=[]))
            continue
        if isinstance(event, h11.Response):
            headers = _response_headers(event.headers, upgrade=False) + extra
            await down.send(h11.Response(status_code=event.status_code, headers=headers, reason=event.reason))
            if on_response is not None:
                await on_response(event.status_code)
        elif isinstance(event, h11.Data):
            await down.send(h11.Data(data=event.data))
        elif isinstance(event, h11.EndOfMessage):
            await down.send(h11.EndOfMessage())
            return False
        elif isinstance(event, h11.ConnectionClosed):
            raise trio.BrokenResourceError("upstream closed mid-response")


async def splice(
    down: Downstream,
    upstream: trio.abc.Stream,
    upstream_early: bytes = b"",
    on_traffic: Callable[[], None] | None = None,
) -> None:
    """Copy bytes both ways until either side ends; then close both.

    Between two plain sockets the bytes never enter this process: the
    kernel moves them through a pipe (``splice(2)``), which saves two copies
    per chunk; any other pair of streams (TLS) is copied through Python.
    """
    client_early, _ = down.conn.trailing_data
    client = down.stream

    async def copy(src: trio.abc.ReceiveStream, dst: trio.abc.SendStream, early: bytes) -> None:
        try:
            if early:
                await send_all(dst, early)
            if isinstance(src, trio.SocketStream) and isinstance(dst, trio.SocketStream):
                await _kernel_copy(src.socket, dst.socket, on_traffic)
            else:
                while data := await src.receive_some(RECEIVE_SIZE):
                    if on_traffic is not None:
                        on_traffic()
                    await send_all(dst, data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        nursery.cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(copy, client, upstream, client_early)
            nursery.start_soon(copy, upstream, client, upstream_early)
    finally:
        with trio.CancelScope(shield=True):
            await upstream.aclose()
            await client.aclose()


_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


async def _kernel_copy(
    src: trio.socket.SocketType, dst: trio.socket.SocketType, on_traffic: Callable[[], None] | None
) -> None:
    """Move what ``src`` receives to ``dst`` through a pipe, until ``src`` ends.

    Raises ``trio.BrokenResourceError`` if ``dst`` takes nothing for
    ``SEND_TIMEOUT``, ``OSError`` if either socket fails.
    """
    pipe_out, pipe_in = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        with contextlib.suppress(OSError):  # a bigger pipe moves bigger chunks; the default works too
            fcntl.fcntl(pipe_in, fcntl.F_SETPIPE_SZ, RECEIVE_SIZE)
        while True:
            await trio.lowlevel.checkpoint()
            try:
                pending = os.splice(src.fileno(), pipe_in, RECEIVE_SIZE, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(src)
                continue
            if pending == 0:
                return
            if on_traffic is not None:
                on_traffic()
            while pending:
                try:
                    pending -= os.splice(pipe_out, dst.fileno(), pending, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    with trio.move_on_after(SEND_TIMEOUT):
                        await trio.lowlevel.wait_writable(dst)
                        continue
                    raise trio.BrokenResourceError(f"the peer took no data for {SEND_TIMEOUT:g}s") from None
    finally:
        os.close(pipe_out)
        os.close(pipe_in)
