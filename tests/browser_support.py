"""Fixtures for browser tests: a web site in the test-made outside world, and a system that reaches it.

The site is a small Quart app served by hypercorn on a socket made inside
the world's namespace (``tests/world.py``), so sessions reach it through
their normal egress and NAT, at ``http://203.0.113.80:8080``; nothing
leaves this machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import Response, request
from quart_trio import QuartTrio

from tests.conftest import System, network_settings, start_system, stop_system
from tests.workspace_support import start_workspace_system, stop_workspace_system
from tests.world import WEB, World, listen, open_world

SITE = f"http://{WEB}:8080"
UNREACHABLE = f"http://{WEB}:8099/"  # nothing listens there

HOME = """<!doctype html>
<html><head><title>Chaser test page</title></head>
<body>
  <h1>Hello from the test world</h1>
  <ul><li class="item">first</li><li class="item">second</li></ul>
  <button id="go" onclick="document.getElementById('out').textContent = 'clicked ' + (++window.clicks)">Go</button>
  <p id="out"></p>
  <script>window.clicks = 0;</script>
</body></html>
"""

LATE = """<!doctype html>
<html><head><title>Late</title></head><body>
<script>setTimeout(() => { const p = document.createElement('p'); p.id = 'late';
  p.textContent = 'arrived'; document.body.appendChild(p); }, 300);</script>
</body></html>
"""


def site_app() -> QuartTrio:
    app = QuartTrio("test-site")

    @app.get("/")
    async def home() -> Response:
        return Response(HOME, content_type="text/html")

    @app.get("/late")
    async def late() -> Response:
        return Response(LATE, content_type="text/html")

    @app.get("/remember")
    async def remember() -> Response:
        """Sets a lasting cookie, and stores the same value in local storage."""
        value = request.args.get("value", "")
        page = f"<title>remember</title><script>localStorage.setItem('remembered', {value!r});</script>"
        response = Response(page, content_type="text/html")
        response.set_cookie("remembered", value, max_age=3600)
        return response

    @app.get("/recall")
    async def recall() -> Response:
        cookie = request.cookies.get("remembered", "none")
        return Response(f"<title>recall</title><h1>{cookie}</h1>", content_type="text/html")

    @app.get("/moved")
    async def moved() -> Response:
        return Response("", status=302, headers={"Location": "/"})

    @app.get("/missing")
    async def missing() -> Response:
        return Response("<title>Not here</title><h1>404</h1>", status=404, content_type="text/html")

    return app


@pytest.fixture
async def web_world(nursery: trio.Nursery) -> AsyncIterator[World]:
    """The outside world with the test site listening in it."""
    async with open_world([]) as world:
        sock = await listen(world, WEB, 8080)
        config = HypercornConfig()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) it
        config.accesslog = None
        config.graceful_timeout = 0.5
        async with trio.open_nursery() as servers:
            await servers.start(partial(hypercorn_serve, site_app(), config))
            yield world
            servers.cancel_scope.cancel()


@pytest.fixture
async def browser_system(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, web_world: World
) -> AsyncIterator[System]:
    """Scheduler and agent (SQLite) whose sessions reach the test site."""
    network = network_settings(uplink=web_world.name, uplink_gateway=web_world.gateway)
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", agent_overrides={"network": network}
    )
    try:
        yield system
    finally:
        await stop_system(system)


@pytest.fixture
async def ws_browser_system(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, web_world: World, pool: Path
) -> AsyncIterator[System]:
    """The same with a storage pool, for browser workspaces (SQLite)."""
    network = network_settings(uplink=web_world.name, uplink_gateway=web_world.gateway)
    system = await start_workspace_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", pool, agent_overrides={"network": network}
    )
    try:
        yield system
    finally:
        await stop_workspace_system(system, pool)
