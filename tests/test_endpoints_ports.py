"""Port forwarding: HTTP, upgrades and raw tunnels to programs listening in a session."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.conftest import System, wait_until
from tests.endpoints import curl, new_session, run, ws_url

# Answers a plain request with the head it received, and echoes the bytes of
# an upgraded connection; stands for any web app or WebSocket server.
ECHO_SERVER = r"""
import socket, threading
def serve(c):
    head = b""
    while b"\r\n\r\n" not in head:
        data = c.recv(4096)
        if not data:
            return
        head += data
    head, rest = head.split(b"\r\n\r\n", 1)
    if b"\r\nupgrade:" in head.lower():
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n" + rest)
        while data := c.recv(65536):
            c.sendall(data)
    else:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(head), head))
    c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9000))
s.listen()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""


async def start_servers(system: System, session_id: str) -> None:
    for path, content in (("echo.py", ECHO_SERVER.encode()), ("site/index.html", b"hello from the session\n")):
        put = await system.client.put(f"/s/{session_id}/files/root/{path}", content=content, params={"parents": "1"})
        assert put.status_code == 201, put.text
    started = await run(
        system,
        session_id,
        "cd /root && (setsid python3 echo.py >/dev/null 2>&1 &) && "
        "(setsid python3 -m http.server 8000 --bind 127.0.0.1 --directory site >/dev/null 2>&1 &)",
    )
    assert started["exit_code"] == 0, started

    async def listening() -> bool:
        probe = "python3 -c 'import socket; [socket.create_connection((\"127.0.0.1\", p)) for p in (8000, 9000)]'"
        return bool((await run(system, session_id, probe))["exit_code"] == 0)

    await wait_until(listening)


def port_url(system: System, session_id: str, port: int, path: str = "/") -> str:
    api = urlsplit(system.api_url)
    return f"http://{port}-{session_id}.localhost:{api.port}{path}"


async def test_http_through_both_url_styles(sqlite_system: System) -> None:
    system = sqlite_system
    session = await new_session(system)
    await start_servers(system, session["id"])
    # curl resolves *.localhost to loopback by itself.
    for url in (
        port_url(system, session["id"], 8000, "/index.html"),
        f"{system.api_url}/s/{session['id']}/ports/8000/index.html",
    ):
        done = await curl(system, url)
        assert done.stdout == b"hello from the session\n", (url, done.stdout, done.stderr)
    # The session's own subdomain is its endpoints' root.
    root = await curl(system, "-f", f"http://{session['id']}.localhost:{urlsplit(system.api_url).port}/")
    assert json.loads(root.stdout)["id"] == session["id"]
    # What the program sees: its own path, the public host and prefix, none of our credentials.
    seen = (await curl(system, "-f", f"{system.api_url}/s/{session['id']}/ports/9000/app/x?q=1")).stdout.decode()
    request_line, *headers = seen.split("\r\n")
    assert request_line == "GET /app/x?q=1 HTTP/1.1"
    lowered = {h.split(":", 1)[0].lower(): h.split(":", 1)[1].strip() for h in headers}
    assert "authorization" not in lowered and system.api_key not in seen and system.token not in seen
    assert lowered["x-forwarded-prefix"] == f"/s/{session['id']}/ports/9000"
    assert lowered["host"] == urlsplit(system.api_url).netloc
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_a_port_nobody_listens_on_is_a_clear_502(sqlite_system: System) -> None:
    system = sqlite_system
    session = await new_session(system)
    for url in (f"{system.api_url}/s/{session['id']}/ports/8111/", port_url(system, session["id"], 8111)):
        with trio.fail_after(10):
            done = await curl(system, "-w", "\n%{http_code}", url)
        body, status = done.stdout.decode().rsplit("\n", 1)
        assert status == "502"
        assert json.loads(body)["error"]["code"] == "port_not_listening"
    bad = await system.client.get(f"/s/{session['id']}/ports/99999/")
    assert bad.status_code == 422
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_upgraded_connection_is_spliced_and_holds_a_lease(sqlite_system: System) -> None:
    system = sqlite_system
    session = await new_session(system)
    await start_servers(system, session["id"])
    api = urlsplit(system.api_url)
    assert api.hostname is not None and api.port is not None
    stream = await trio.open_tcp_stream(api.hostname, api.port)
    async with stream:
        await stream.send_all(
            f"GET /s/{session['id']}/ports/9000/live HTTP/1.1\r\nHost: {api.netloc}\r\n"
            f"Authorization: Bearer {system.api_key}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n".encode()
        )
        head = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(4096)
        assert head.startswith(b"HTTP/1.1 101")
        payload = bytes(range(256)) * 64
        await stream.send_all(payload)
        echoed = head.split(b"\r\n\r\n", 1)[1]
        with trio.fail_after(10):
            while len(echoed) < len(payload):
                echoed += await stream.receive_some(65536)
        assert echoed == payload

        async def leases() -> Any:
            return (await system.client.get(f"/v1/sessions/{session['id']}")).json()["active_connection_leases"]

        assert await leases() == 1
    await wait_until(lambda: _equals(leases, 0))
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def _equals(get: Any, value: int) -> bool:
    return bool(await get() == value)


async def test_raw_tunnel_over_websocket(sqlite_system: System) -> None:
    system = sqlite_system
    session = await new_session(system)
    await start_servers(system, session["id"])
    headers = [("Authorization", f"Bearer {system.api_key}")]
    async with open_websocket_url(ws_url(system, session["id"], "tunnel/8000"), extra_headers=headers) as ws:
        await ws.send_message("ping")
        with trio.fail_after(10):
            assert await ws.get_message() == "pong"
        await ws.send_message(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        received = b""
        with trio.fail_after(10):
            try:
                while True:
                    received += await ws.get_message()
            except ConnectionClosed as closed:  # HTTP/1.0: the server closes, and so does the tunnel
                assert closed.reason.reason == "the program closed the connection"
        assert received.startswith(b"HTTP/1.0 200") and received.endswith(b"hello from the session\n")
    closed = await system.client.get(f"/s/{session['id']}/tunnel/8111")
    assert closed.status_code == 404  # a tunnel is a WebSocket
    await system.client.delete(f"/v1/sessions/{session['id']}")
