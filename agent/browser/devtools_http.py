"""GET a DevTools HTTP endpoint (``/json/version``, ``/json/list``) over a given stream.

The stream comes from ``Runtime.open_port``, so this works the same for a
container and a microVM. Chromium answers only requests whose Host is an
address or ``localhost`` (its guard against DNS rebinding), so the Host is
always its own loopback address.
"""

from __future__ import annotations

import json
from typing import Any

import h11
import trio

from agent.browser.chromium import DEVTOOLS_PORT

HOST = f"127.0.0.1:{DEVTOOLS_PORT}"
MAX_RESPONSE = 1 << 20


class DevtoolsHttpError(Exception):
    """Chromium's DevTools answered, but not with a JSON 200."""


async def get_json(stream: trio.abc.Stream, path: str) -> Any:
    """Send one GET on ``stream`` (closed after) and return the JSON body."""
    try:
        async with stream:
            status, body = await _exchange(stream, path)
    except h11.RemoteProtocolError as exc:
        raise DevtoolsHttpError(f"GET {path}: not HTTP ({exc})") from None
    if status != 200:
        raise DevtoolsHttpError(f"GET {path} answered {status}")
    try:
        return json.loads(body)
    except ValueError:
        raise DevtoolsHttpError(f"GET {path} did not answer JSON") from None


async def _exchange(stream: trio.abc.Stream, path: str) -> tuple[int, bytes]:
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target=path, headers=[("Host", HOST), ("Connection", "close")])
    await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
    status = 0
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_RESPONSE:
                raise DevtoolsHttpError(f"the answer to {path} is larger than {MAX_RESPONSE} bytes")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, bytes(body)
