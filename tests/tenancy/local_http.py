"""Small HTTP servers on 127.0.0.1 that tests start: a JWKS endpoint and a webhook receiver.

They are the standard library's ``http.server`` in a thread, so what talks
to them is a real HTTP client over a real socket. Nothing listens beyond
loopback.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, bytes]]


@contextmanager
def serve(handle: Handler, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``handle(method, path, headers, body) -> (status, body)`` at a loopback URL."""

    class RequestHandler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, reply = handle(self.command, self.path, dict(self.headers.items()), body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_POST = _any

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), RequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class WebhookReceiver:
    """Records every delivery; answers with ``statuses`` in turn, then ``then``."""

    statuses: list[int] = field(default_factory=list)
    then: int = 200
    received: list[Received] = field(default_factory=list)
    url: str = ""
    hold: threading.Event | None = None  # when set up, each request waits for it

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.hold is not None:
            self.hold.wait(timeout=30)
        status = self.statuses.pop(0) if self.statuses else self.then
        self.received.append(Received({k.lower(): v for k, v in headers.items()}, body, status))
        return status, b'{"ok": true}'

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if r.headers.get("chaser-event") == event_type]
