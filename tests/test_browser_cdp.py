"""The CDP proxy, driven by clients no one here wrote, through both endpoint styles.

Playwright for Python (``connect_over_cdp``) and puppeteer-core (``connect``
with a ``browserWSEndpoint``) drive a Chaser browser session given only a
URL; curl and the ``websockets`` library check the rewriting and the
subdomain style (curl and an explicit Host: ``*.localhost`` is loopback).
The pages come from the test site in a test-made namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio
import websockets
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from tests.browser_support import SITE
from tests.conftest import System, wait_until
from tests.test_jobs_cli import chaser

JS = Path(__file__).parent / "js"
NO_PROXY_ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


async def browser(system: System) -> dict[str, Any]:
    response = await system.client.post("/v1/sessions", json={"session_type": "browser", "ephemeral": True})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def token(system: System, session_id: str) -> str:
    response = await system.client.post(f"/v1/sessions/{session_id}/tokens", json={})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


async def cdp_endpoint(system: System, session_id: str) -> str:
    """What a client given only a token would connect to: /json/version's browser WebSocket URL."""
    given = await token(system, session_id)
    async with httpx.AsyncClient(base_url=system.api_url) as raw:
        version = await raw.get(f"/s/{session_id}/json/version?chaser_token={given}")
    assert version.status_code == 200, version.text
    return str(version.json()["webSocketDebuggerUrl"])


async def leases(system: System, session_id: str) -> int:
    return int((await system.client.get(f"/v1/sessions/{session_id}")).json()["active_connection_leases"])


def port_of(system: System) -> int:
    port = urlsplit(system.api_url).port
    assert port is not None
    return port


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    return data[:8] == b"\x89PNG\r\n\x1a\n" and width > 100 and height > 100


async def test_json_endpoints_are_rewritten_to_the_path_style(browser_system: System) -> None:
    session = await browser(browser_system)
    base = f"/s/{session['id']}"
    version = await browser_system.client.get(f"{base}/json/version")
    assert version.status_code == 200, version.text
    ws = urlsplit(version.json()["webSocketDebuggerUrl"])
    assert (ws.scheme, ws.netloc) == ("ws", f"127.0.0.1:{port_of(browser_system)}")
    assert ws.path.startswith(f"{base}/devtools/browser/")
    # The caller used an API key, which never goes in a URL: a session token was minted for it.
    [minted] = parse_qs(ws.query)["chaser_token"]
    assert minted.startswith("st_") and browser_system.api_key not in version.text

    created = await browser_system.client.put(f"{base}/json/new?{SITE}/")
    assert created.status_code == 200, created.text
    page = created.json()
    assert page["url"] == f"{SITE}/" and page["webSocketDebuggerUrl"].startswith(
        f"ws://127.0.0.1:{port_of(browser_system)}{base}/devtools/page/{page['id']}?"
    )
    front = parse_qs(urlsplit(page["devtoolsFrontendUrl"]).query)["ws"][0]
    assert front.startswith(f"127.0.0.1:{port_of(browser_system)}{base}/devtools/page/{page['id']}?chaser_token=")
    listed = (await browser_system.client.get(f"{base}/json/list")).json()
    assert page["id"] in {t["id"] for t in listed}
    closed = await browser_system.client.get(f"{base}/json/close/{page['id']}")
    assert closed.status_code == 200 and "closing" in closed.text

    # A token in the path is kept in the path, for clients that append to a base URL.
    given = await token(browser_system, session["id"])
    raw = httpx.AsyncClient(base_url=browser_system.api_url)
    async with raw:
        pathed = await raw.get(f"{base}/t/{given}/json/version/")
        assert pathed.status_code == 200, pathed.text
        url = urlsplit(pathed.json()["webSocketDebuggerUrl"])
        assert url.path.startswith(f"{base}/t/{given}/devtools/browser/") and url.query == ""
        assert (await raw.get(f"{base}/json/version")).status_code == 401
        assert (await raw.get(f"{base}/t/st_forged.abc/json/version")).status_code == 401


async def test_subdomain_style_with_curl_and_websockets(browser_system: System) -> None:
    session = await browser(browser_system)
    given = await token(browser_system, session["id"])
    host = f"{session['id']}.localhost:{port_of(browser_system)}"
    # Only the URL (curl resolves *.localhost to loopback by itself).
    argv = ["curl", "-sS", "-f", f"http://{host}/json/version?chaser_token={given}"]
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False, env=NO_PROXY_ENV)
    assert done.returncode == 0, done.stderr
    endpoint = json.loads(done.stdout)["webSocketDebuggerUrl"]
    assert endpoint.startswith(f"ws://{host}/devtools/browser/"), endpoint
    assert endpoint.endswith(f"?chaser_token={given}"), endpoint

    async def evaluate() -> Any:
        # The URL names the subdomain; the connection goes to loopback, as DNS for it would.
        async with websockets.connect(endpoint, host="127.0.0.1", port=port_of(browser_system)) as ws:
            await ws.send(json.dumps({"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}}))
            target = json.loads(await ws.recv())["result"]["targetId"]
            attach = {"targetId": target, "flatten": True}
            await ws.send(json.dumps({"id": 2, "method": "Target.attachToTarget", "params": attach}))
            while "id" not in (answer := json.loads(await ws.recv())):
                pass
            call = {"expression": "1 + 1"}
            await ws.send(json.dumps({"id": 3, "method": "Runtime.evaluate", "params": call,
                                      "sessionId": answer["result"]["sessionId"]}))  # fmt: skip
            while (answer := json.loads(await ws.recv())).get("id") != 3:
                pass
            return answer["result"]["result"]["value"]

    assert await trio.to_thread.run_sync(asyncio.run, evaluate()) == 2


def drive_with_playwright(endpoint: str, url: str, shot: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        connected = playwright.chromium.connect_over_cdp(endpoint)
        context = connected.contexts[0] if connected.contexts else connected.new_context()
        page = context.new_page()
        response = page.goto(url)
        assert response is not None
        page.click("#go")
        page.click("#go")
        seen = {"status": response.status, "title": page.title(), "text": page.text_content("#out")}
        page.screenshot(path=str(shot))
        page.close()
        connected.close()
        return seen


async def test_playwright_drives_the_session(browser_system: System, tmp_path: Path) -> None:
    session = await browser(browser_system)
    given = await token(browser_system, session["id"])
    # Only a URL: the path style with the token in the query.
    endpoint = f"{browser_system.api_url}/s/{session['id']}?chaser_token={given}"
    shot = tmp_path / "playwright.png"
    seen = await trio.to_thread.run_sync(drive_with_playwright, endpoint, f"{SITE}/", shot)
    assert seen == {"status": 200, "title": "Chaser test page", "text": "clicked 2"}
    assert is_png(shot)


async def test_puppeteer_drives_the_session(browser_system: System, tmp_path: Path) -> None:
    session = await browser(browser_system)
    # The URL from `chaser browser cdp-url` is all puppeteer is given (its token rides in the path).
    printed = await chaser(browser_system, "browser", "cdp-url", session["id"])
    assert printed.returncode == 0, printed.stderr
    endpoint = printed.stdout.decode().strip()
    assert endpoint.startswith(f"ws://127.0.0.1:{port_of(browser_system)}/s/{session['id']}/t/st_")
    shot = tmp_path / "puppeteer.png"
    argv = ["node", str(JS / "drive.js"), endpoint, f"{SITE}/", str(shot)]
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False, env=NO_PROXY_ENV)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == {"status": 200, "title": "Chaser test page", "text": "clicked 2"}
    assert is_png(shot)


async def test_cdp_websocket_holds_a_lease_terminate_refused_then_forced(browser_system: System) -> None:
    session = await browser(browser_system)
    given = await token(browser_system, session["id"])
    async with httpx.AsyncClient(base_url=browser_system.api_url) as raw:
        endpoint = (await raw.get(f"/s/{session['id']}/json/version?chaser_token={given}")).json()[
            "webSocketDebuggerUrl"
        ]

    async with open_websocket_url(endpoint) as ws:
        await ws.send_message(json.dumps({"id": 1, "method": "Browser.getVersion"}))
        assert "Chrome" in json.loads(await ws.get_message())["result"]["product"]
        assert await leases(browser_system, session["id"]) == 1
        refused = await browser_system.client.delete(f"/v1/sessions/{session['id']}")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "active_connections"
        forced = await browser_system.client.delete(f"/v1/sessions/{session['id']}", params={"force": "true"})
        assert forced.status_code == 200
        with trio.fail_after(20), pytest.raises(ConnectionClosed):
            await ws.get_message()
    assert await leases(browser_system, session["id"]) == 0


async def test_garbage_over_the_websocket_ends_only_that_connection(browser_system: System) -> None:
    session = await browser(browser_system)
    endpoint = await cdp_endpoint(browser_system, session["id"])
    path = urlsplit(endpoint)
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(browser_system))
    async with stream:
        handshake = (
            f"GET {path.path}?{path.query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await stream.send_all(handshake.encode())
        assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 101")
        await stream.send_all(b"this is not a websocket frame at all\r\n" * 10)
        with trio.fail_after(20):
            while await stream.receive_some(4096):
                pass  # Chromium answers with a close, then hangs up
    await wait_until(lambda: _no_leases(browser_system, session["id"]))
    # The browser and the session are fine: a real client still gets in.
    async with open_websocket_url(endpoint) as ws:
        await ws.send_message(json.dumps({"id": 7, "method": "Browser.getVersion"}))
        assert json.loads(await ws.get_message())["id"] == 7


async def _no_leases(system: System, session_id: str) -> bool:
    return await leases(system, session_id) == 0


async def test_browser_crash_closes_cdp_connections_and_ends_the_session(browser_system: System) -> None:
    session = await browser(browser_system)
    async with open_websocket_url(await cdp_endpoint(browser_system, session["id"])) as ws:
        kill = {"session_id": session["id"], "command": "pkill -KILL -o chromium"}
        assert (await browser_system.client.post("/v1/exec", json=kill)).status_code == 200
        with trio.fail_after(20), pytest.raises(ConnectionClosed):
            await ws.get_message()
    await wait_until(lambda: _terminated(browser_system, session["id"]), timeout=30)
    row = (await browser_system.client.get(f"/v1/sessions/{session['id']}")).json()
    assert row["status_reason"].startswith("the browser exited unexpectedly") and row["active_connection_leases"] == 0


async def _terminated(system: System, session_id: str) -> bool:
    return bool((await system.client.get(f"/v1/sessions/{session_id}")).json()["status"] == "terminated")


async def test_cdp_of_what_is_no_browser_and_bad_requests(browser_system: System) -> None:
    sandbox = (await browser_system.client.post("/v1/sessions", json={"ephemeral": True})).json()
    answer = await browser_system.client.get(f"/s/{sandbox['id']}/json/version")
    assert answer.status_code == 404 and "not a browser session" in answer.json()["error"]["message"]
    session = await browser(browser_system)
    endpoint = urlsplit(await cdp_endpoint(browser_system, session["id"]))
    base = f"ws://{endpoint.netloc}/s/{session['id']}"
    for wrong, status in (
        (f"{base}/json/version?{endpoint.query}", 404),
        (f"{base}/devtools/page/NOPE?{endpoint.query}", None),
    ):
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(wrong):
                pass
        assert status is None or rejected.value.status_code == status
    assert await leases(browser_system, session["id"]) == 0
    async with httpx.AsyncClient(base_url=browser_system.api_url) as raw:
        assert (await raw.get(f"/s/{session['id']}/json/version")).status_code == 401
