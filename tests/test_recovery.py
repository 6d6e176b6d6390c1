"""The agent re-adopts what still runs after its restart; the scheduler reconciles."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import lxc
import trio

from tests.conftest import start_system, stop_system, wait_until


async def test_agent_restart_readopts_and_removes_debris(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path
) -> None:
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", agent_overrides={"destroy_on_shutdown": False}
    )
    try:
        session = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
        write = {"session_id": session["id"], "command": "echo kept > /root/state"}
        assert (await system.client.post("/v1/exec", json=write)).json()["exit_code"] == 0

        await system.agent.stop()
        assert session["id"] in system.containers(), "a host agent restart must not kill sandboxes"

        # Debris of a crash: a sandbox dir with no record, and a record of a
        # create that never finished.
        stray = system.lxc_path / str(uuid.uuid4())
        (stray / "delta0").mkdir(parents=True)
        half = str(uuid.uuid4())
        records = system.lxc_path.parent / "sandboxes"
        (records / f"{half}.json").write_text(
            json.dumps(
                {"id": half, "image": "debian:bookworm", "runtime": "lxc", "status": "creating", "created_at": 0}
            )
        )

        system.agent.config.destroy_on_shutdown = True
        await system.agent.start(nursery)
        assert system.leftovers() == {session["id"]}
        assert sorted(p.name for p in records.iterdir()) == [f"{session['id']}.json"]

        async def execs() -> bool:  # once the new agent's heartbeat carried its URL
            read = {"session_id": session["id"], "command": "cat /root/state"}
            return (await system.client.post("/v1/exec", json=read)).json().get("output") == "kept\n"

        await wait_until(execs)
        assert (await system.client.get(f"/v1/sessions/{session['id']}")).json()["status"] == "running"
        await system.client.delete(f"/v1/sessions/{session['id']}")
    finally:
        await stop_system(system)


async def test_sandbox_dying_behind_our_back_is_reported(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path
) -> None:
    system = await start_system(nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}")
    try:
        session = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
        assert lxc.Container(session["id"], str(system.lxc_path)).stop()

        async def reported() -> bool:
            current = (await system.client.get(f"/v1/sessions/{session['id']}")).json()
            return current["status"] == "terminated"

        await wait_until(reported)
        current = (await system.client.get(f"/v1/sessions/{session['id']}")).json()
        assert current["status_reason"] == "the sandbox stopped on its host"
        assert session["id"] not in system.leftovers()
    finally:
        await stop_system(system)


async def test_orphan_sandbox_is_destroyed(nursery: trio.Nursery, tmp_path: Path, images_dir: Path) -> None:
    """A sandbox the scheduler never asked for (or forgot) does not live on."""
    system = await start_system(nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}")
    try:
        orphan = str(uuid.uuid4())
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {system.token}"}) as agent:
            created = await agent.post(f"{system.agent.url}/v1/sandboxes", json={"id": orphan, "image": "default"})
            assert created.status_code == 201
        assert orphan in system.containers()

        async def gone() -> bool:
            return orphan not in system.containers() and orphan not in system.leftovers()

        await wait_until(gone)
    finally:
        await stop_system(system)


async def test_agent_api_requires_the_host_token(nursery: trio.Nursery, tmp_path: Path, images_dir: Path) -> None:
    system = await start_system(nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}")
    try:
        async with httpx.AsyncClient(base_url=system.agent.url) as anonymous:
            assert (await anonymous.get("/healthz")).status_code == 200
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {system.api_key}"}):
                response = await anonymous.get("/v1/sandboxes", headers=headers)
                assert response.status_code == 401
                assert response.json()["error"]["code"] == "unauthorized"
        async with httpx.AsyncClient(base_url=system.api_url) as anonymous:
            beat = await anonymous.post("/internal/v1/hosts/heartbeat", json={})
            assert beat.status_code == 401
    finally:
        await stop_system(system)
