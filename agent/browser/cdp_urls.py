"""Rewriting the URLs in Chromium's DevTools JSON to the public endpoint a client used.

Chromium names itself (``ws://127.0.0.1:9222/devtools/page/<id>``) in the
answers to ``/json/version``, ``/json/list`` and ``/json/new``; a client
outside the session must instead be sent back through the endpoint it came
in by: the path style (``/s/<session_id>``) or the session's subdomain,
``ws`` or ``wss`` as its request was plain or TLS, with the session token
it can put in a URL. Pure: fed bytes, returns bytes (tested without I/O).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_WS_PARAMS = ("ws", "wss")


@dataclass(frozen=True)
class PublicEndpoint:
    """The session's endpoint as the client reached it."""

    scheme: str  # http or https
    host: str  # host[:port], as the client sent it
    prefix: str = ""  # "/s/<session_id>" in the path style; "" on the session's subdomain
    query: str = ""  # appended to every WebSocket URL (a session token), without "?"

    @property
    def ws_scheme(self) -> str:
        return "wss" if self.scheme == "https" else "ws"

    def _location(self, devtools_path: str) -> str:
        """host + path (+ query) of a DevTools WebSocket, without the scheme."""
        return f"{self.host}{self.prefix}{devtools_path}" + (f"?{self.query}" if self.query else "")

    def websocket_url(self, devtools_path: str) -> str:
        return f"{self.ws_scheme}://{self._location(devtools_path)}"

    def frontend_url(self, url: str) -> str:
        """A DevTools front end URL whose ``ws=`` parameter points here (``wss=`` over TLS)."""
        parts = urlsplit(url)
        params = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in _WS_PARAMS:
                path = "/" + value.split("/", 1)[1] if "/" in value else "/"
                params.append((self.ws_scheme, self._location(path)))
            else:
                params.append((name, value))
        query = urlencode(params)
        if parts.scheme:  # Chromium's hosted front end: keep where it is served from
            return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        # The front end bundled with Chromium, served through this endpoint too.
        return urlunsplit((self.scheme, self.host, self.prefix + parts.path, query, parts.fragment))


def rewrite_json(body: bytes, public: PublicEndpoint) -> bytes:
    """Chromium's ``/json/*`` answer with its URLs pointing at ``public``; other JSON unchanged."""
    data = json.loads(body)
    for item in data if isinstance(data, list) else [data]:
        if isinstance(item, dict):
            _rewrite_item(item, public)
    return json.dumps(data, indent=1).encode()


def _rewrite_item(item: dict[str, Any], public: PublicEndpoint) -> None:
    ws = item.get("webSocketDebuggerUrl")
    if isinstance(ws, str):
        item["webSocketDebuggerUrl"] = public.websocket_url(urlsplit(ws).path)
    frontend = item.get("devtoolsFrontendUrl")
    if isinstance(frontend, str):
        item["devtoolsFrontendUrl"] = public.frontend_url(frontend)
