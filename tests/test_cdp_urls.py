"""The CDP URL rewriting core, fed Chromium's own answers (Debian's Chromium 156), and the router's CDP targets."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from agent.browser.cdp_urls import PublicEndpoint, rewrite_json
from scheduler.router import Requirement, SessionTarget, requirement, session_target

pytestmark = pytest.mark.fast

SID = "0b6c1f8e-2f7d-4d43-9d7e-6a1f3f0b2c11"
VERSION = b"""{
   "Browser": "Chrome/156.0.8078.79",
   "Protocol-Version": "1.3",
   "webSocketDebuggerUrl": "ws://127.0.0.1:9222/devtools/browser/6cbb592d-1da7-4e75-a240-3e02d5eed6de"
}"""
LIST = b"""[ {
   "devtoolsFrontendUrl": "https://chrome-devtools-frontend.appspot.com/serve_rev/@a21ce95c/inspector.html?ws=127.0.0.1:9222/devtools/page/98D1",
   "id": "98D1",
   "type": "page",
   "url": "about:blank",
   "webSocketDebuggerUrl": "ws://127.0.0.1:9222/devtools/page/98D1"
}, {
   "devtoolsFrontendUrl": "/devtools/inspector.html?ws=127.0.0.1:9222/devtools/page/F8CD",
   "id": "F8CD",
   "type": "page"
} ]"""


def test_path_style_over_plain_http() -> None:
    public = PublicEndpoint("http", "127.0.0.1:8080", f"/s/{SID}")
    version = json.loads(rewrite_json(VERSION, public))
    assert version["webSocketDebuggerUrl"] == (
        f"ws://127.0.0.1:8080/s/{SID}/devtools/browser/6cbb592d-1da7-4e75-a240-3e02d5eed6de"
    )
    assert version["Browser"] == "Chrome/156.0.8078.79"  # the rest untouched


def test_subdomain_over_tls_with_a_token() -> None:
    public = PublicEndpoint("https", f"{SID}.chaser.test", "", "chaser_token=st_abc.def")
    hosted, bundled = json.loads(rewrite_json(LIST, public))
    assert hosted["webSocketDebuggerUrl"] == f"wss://{SID}.chaser.test/devtools/page/98D1?chaser_token=st_abc.def"
    front = urlsplit(hosted["devtoolsFrontendUrl"])
    assert front.netloc == "chrome-devtools-frontend.appspot.com"
    # The front end connects to what its wss= parameter names (the token travels inside it).
    assert parse_qs(front.query) == {"wss": [f"{SID}.chaser.test/devtools/page/98D1?chaser_token=st_abc.def"]}
    # The bundled front end is served through the session's endpoint too.
    front = urlsplit(bundled["devtoolsFrontendUrl"])
    assert (front.scheme, front.netloc, front.path) == ("https", f"{SID}.chaser.test", "/devtools/inspector.html")
    assert "webSocketDebuggerUrl" not in bundled


def test_other_json_is_left_alone() -> None:
    public = PublicEndpoint("http", "h:1", "/s/x")
    assert json.loads(rewrite_json(b'{"ok": true}', public)) == {"ok": True}
    assert json.loads(rewrite_json(b'"Target is closing"', public)) == "Target is closing"


def test_router_targets_of_cdp_endpoints() -> None:
    path = session_target(f"/s/{SID}/json/version?x=1".encode(), b"127.0.0.1:8080", "localhost")
    assert path == SessionTarget(SID, "/json/version", "x=1", f"/s/{SID}", None)
    tokened = session_target(f"/s/{SID}/t/st_a.b/devtools/page/P".encode(), b"127.0.0.1:8080", "localhost")
    assert tokened == SessionTarget(SID, "/devtools/page/P", "", f"/s/{SID}/t/st_a.b", "st_a.b")
    on_subdomain = session_target(b"/t/st_a.b/json/list", f"{SID}.localhost:8080".encode(), "localhost")
    assert on_subdomain == SessionTarget(SID, "/json/list", "", "/t/st_a.b", "st_a.b")
    # Other endpoints keep their prefixes: none, or a forwarded port's.
    assert session_target(f"/s/{SID}/pty".encode(), None, "localhost") == SessionTarget(SID, "/pty", "", "", None)
    port = session_target(f"/s/{SID}/ports/80/x".encode(), None, "localhost")
    assert port is not None and port.public_prefix == f"/s/{SID}/ports/80"
    assert requirement("/devtools/page/P", "GET", True) == Requirement("sessions.write", "session.cdp")
    assert requirement("/json/version", "GET", False) == Requirement("sessions.write", None)
