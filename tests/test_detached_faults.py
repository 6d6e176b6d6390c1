"""No failure of detached work ends the scheduler: the request gets an API error instead.

Provisioning, pausing and disk work run in a service's nursery (a client
hanging up cannot cut them off); an exception escaping there would end the
scheduler. Each failure is injected for real: the store refuses a write
(a trigger in the database), a host answers nonsense (a peer that is not an
agent), a deadline passes.
"""

from __future__ import annotations

import json
import secrets
from functools import partial
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import trio

from chaser.wire import errors
from scheduler.auth import new_secret
from scheduler.detached import run_detached
from scheduler.main import serve as serve_scheduler
from tests.conftest import Server, scheduler_config, start_system, stop_system

REFUSE_RUNNING = """
CREATE TRIGGER refuse_running BEFORE UPDATE OF status ON sessions WHEN NEW.status = 'running'
BEGIN SELECT RAISE(ABORT, 'injected store failure'); END
"""


async def test_store_failure_while_provisioning(nursery: trio.Nursery, tmp_path: Path, images_dir: Path) -> None:
    """The store refuses to mark a created session running: 503, and the scheduler lives on."""
    url = f"sqlite:///{tmp_path / 'chaser.db'}"
    system = await start_system(nursery, tmp_path, images_dir, url)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(REFUSE_RUNNING))
        response = await system.client.post("/v1/sessions", json={"ephemeral": True})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "store_unavailable"

        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER refuse_running"))
        [session] = (await system.client.get("/v1/sessions")).json()["sessions"]
        assert session["status"] == "creating"  # the sweep ends it at its deadline; we do now
        response = await system.client.delete(f"/v1/sessions/{session['id']}")
        assert response.status_code == 200, response.text
        response = await system.client.post("/v1/sessions", json={"ephemeral": True})
        assert response.status_code == 201, response.text
        await system.client.delete(f"/v1/sessions/{response.json()['id']}")
    finally:
        engine.dispose()
        await stop_system(system)


async def _nonsense_host(stream: trio.SocketStream) -> None:
    """A peer that answers every request 200 with a JSON list, which no agent ever sends."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = await stream.receive_some()
        if not chunk:
            return
        request += chunk
    body = b"[]"
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
        % (len(body), body)
    )
    await stream.aclose()


async def test_nonsense_from_a_host_while_provisioning(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A host's create answers something unexpected: 503 ``operation_failed``, and the scheduler lives on."""
    [listener] = await nursery.start(partial(trio.serve_tcp, _nonsense_host, 0, host="127.0.0.1"))
    host_port = listener.socket.getsockname()[1]
    token = secrets.token_urlsafe(32)
    api_key = new_secret()
    scheduler = Server(serve_scheduler, scheduler_config(f"sqlite:///{tmp_path / 'chaser.db'}", token, api_key))
    api_url = await scheduler.start(nursery)
    heartbeat = {
        "host_id": "nonsense",
        "url": f"http://127.0.0.1:{host_port}",
        "runtimes": ["lxc"],
        "session_types": ["sandbox"],
        "images": ["default"],
        "capacity": {"max_sandboxes": 4, "cpus": 2, "memory_mb": 4096},
        "sandboxes": [],
    }
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {api_key}"}) as client:
        try:
            response = await client.post(
                "/internal/v1/hosts/heartbeat", content=json.dumps(heartbeat),
                headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
            )  # fmt: skip
            assert response.status_code == 200, response.text
            response = await client.post("/v1/sessions", json={"ephemeral": True})
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "operation_failed"
            assert (await client.get("/v1/sessions")).status_code == 200
        finally:
            await scheduler.stop()


@pytest.mark.fast
@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (sa.exc.OperationalError("UPDATE sessions", {}, Exception("database is locked")), 503, "store_unavailable"),
        (trio.TooSlowError(), 504, "operation_timeout"),
        (KeyError("network"), 503, "operation_failed"),
        (errors.Conflict("busy", code="busy"), 409, "busy"),
    ],
)
async def test_each_failure_becomes_an_api_error(failure: Exception, status: int, code: str) -> None:
    """Whatever detached work raises reaches its caller as an API error, never its nursery."""
    async with trio.open_nursery() as nursery:

        async def work() -> None:
            await trio.sleep(0)
            raise failure

        with pytest.raises(errors.ApiError) as raised:
            await run_detached(nursery, work)
        assert (raised.value.status, raised.value.code) == (status, code)
        assert await run_detached(nursery, lambda: _answer(42)) == 42  # the nursery still runs work


async def _answer(value: int) -> int:
    return value
