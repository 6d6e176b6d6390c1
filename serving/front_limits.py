"""What the front allows one client: time to send a request, and connections at once.

A slow client costs a connection and a task for as long as it is let
take: one that sends its head a byte a second (slowloris), or its body
that way, would hold them for ever, and a few thousand such connections
from one address would starve everyone else. So a request's head must
arrive within ``header_timeout`` of its first byte, an API request's body
within ``body_timeout`` of the app's first read of it (session endpoints
stream bodies of any size and have their own inactivity timeouts), and one
address may hold at most ``max_connections_per_address`` connections (none
past it: the connection is closed at once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11
import trio

from chaser.wire import errors
from serving.asgi_call import Exchange
from serving.relay import RECEIVE_SIZE, Downstream

Message = dict[str, Any]


@dataclass(frozen=True)
class FrontLimits:
    # From a request's first byte to the end of its head.
    header_timeout: float = 10.0
    # An API request's whole body, from the app's first read; None: none (an
    # agent, whose app streams file uploads of any size from the schedulers).
    body_timeout: float | None = None
    # Connections one address may hold open at once; None: no cap (an agent,
    # whose only clients are the schedulers).
    max_connections_per_address: int | None = None


class RequestTimeout(errors.ApiError):
    status = 408
    code = "request_timeout"


class HeadTimedOut(Exception):
    """The client began a request and did not finish its head in time."""


async def next_request_event(down: Downstream, idle: float, header_timeout: float) -> h11.Event | None:
    """The next event of the connection: None after ``idle`` with no byte; a head must then come whole in time."""
    event = down.conn.next_event()
    if event is not h11.NEED_DATA:
        return event  # type: ignore[return-value]
    with trio.move_on_after(idle):
        data = await down.stream.receive_some(RECEIVE_SIZE)
        down.conn.receive_data(bytes(data))
        with trio.move_on_after(header_timeout):
            return await down.next_event()  # type: ignore[return-value]
        raise HeadTimedOut()
    return None


def timed_body(exchange: Exchange, limit: float | None) -> Callable[[], Awaitable[Message]]:
    """``exchange.receive`` with the body due within ``limit`` seconds of reading in all.

    Past it the client gets 408 and is treated as gone (the app sees
    ``http.disconnect``, as when a client hangs up).
    """
    if limit is None:
        return exchange.receive
    spent = 0.0
    done = False

    async def receive() -> Message:
        nonlocal spent, done
        if done:
            return await exchange.receive()
        started = trio.current_time()
        with trio.move_on_after(max(limit - spent, 0.0)):
            message = await exchange.receive()
            spent += trio.current_time() - started
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message
        done = True
        if not exchange.started:
            exchange.started = True
            timeout = RequestTimeout(f"the request body did not arrive within {limit:g}s")
            gone = (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError)
            with trio.move_on_after(1), contextlib.suppress(*gone):
                await exchange.down.send_error(timeout)
        exchange.client_gone = True
        return {"type": "http.disconnect"}

    return receive


class ConnectionCounts:
    """Open connections per address, for the cap; an address is forgotten when it holds none."""

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.open: dict[str, int] = {}

    def admit(self, peer: str) -> bool:
        held = self.open.get(peer, 0)
        if self.cap is not None and held >= self.cap:
            return False
        self.open[peer] = held + 1
        return True

    def release(self, peer: str) -> None:
        held = self.open.get(peer, 0) - 1
        if held > 0:
            self.open[peer] = held
        else:
            self.open.pop(peer, None)


async def lingering_close(stream: trio.SocketStream, last_words: bytes) -> None:
    """Send ``last_words``, then read (and drop) what the client still sends for a moment before closing.

    Closing with unread bytes makes the kernel reset the connection, and a
    reset throws away the answer the client has not read yet.
    """
    gone = (trio.BrokenResourceError, trio.ClosedResourceError)
    with trio.move_on_after(1), contextlib.suppress(*gone):
        await stream.send_all(last_words)
        await stream.send_eof()
        drained = 0
        while drained < (1 << 16) and (data := await stream.receive_some(RECEIVE_SIZE)):
            drained += len(data)
