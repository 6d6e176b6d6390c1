"""A create that fails or is cut off half-way leaves nothing behind."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trio
import trio.testing

import vmimages.bundle
from agent.runtimes.lxc.runtime import LxcRuntime
from agent.sandboxes.images import ImageStore
from agent.sandboxes.manager import SandboxManager
from chaser.wire import errors
from tests.conftest import System, start_system, stop_system, wait_until


async def _assert_nothing_left(system: System) -> None:
    assert (await system.client.get("/v1/sessions")).json()["sessions"] == []
    assert system.containers() == set()
    assert system.leftovers() == set()
    records = system.lxc_path.parent / "sandboxes"
    assert list(records.iterdir()) == []


async def test_start_failure_rolls_back(nursery: trio.Nursery, tmp_path: Path, images_dir: Path) -> None:
    """The container cannot start (its agent's bundle is missing): 503, and no trace of it."""
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}",
        agent_overrides={"sandbox_bundle": tmp_path / "no-such-bundle"},
    )  # fmt: skip
    try:
        response = await system.client.post("/v1/sessions", json={"ephemeral": True})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "start_failed"
        response = await system.client.post("/v1/exec", json={"ephemeral": True, "command": "true"})
        assert response.status_code == 503
        await _assert_nothing_left(system)
    finally:
        await stop_system(system)


async def test_agent_start_timeout_rolls_back(nursery: trio.Nursery, tmp_path: Path, images_dir: Path) -> None:
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", agent_overrides={"start_timeout": 0.001}
    )
    try:
        response = await system.client.post("/v1/sessions", json={"ephemeral": True})
        assert response.status_code == 504, response.text
        await _assert_nothing_left(system)
    finally:
        await stop_system(system)


async def test_create_deadline_ends_terminated_with_reason(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path
) -> None:
    """No state lasts forever: past its deadline a create ends terminated, and says why."""
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", scheduler_overrides={"create_timeout": 0.005}
    )
    try:
        response = await system.client.post("/v1/sessions", json={"ephemeral": True})
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "create_timeout"
        [session] = (await system.client.get("/v1/sessions")).json()["sessions"]
        assert session["status"] == "terminated"
        assert session["status_reason"] == "did not start within 0.005s"

        async def gone() -> bool:
            return not system.containers() and not system.leftovers()

        await wait_until(gone)
    finally:
        await stop_system(system)


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08])
async def test_cancelled_create_leaves_nothing(
    tmp_path: Path, images_dir: Path, delay: float, nursery: trio.Nursery
) -> None:
    runtime = LxcRuntime(tmp_path / "lxc", vmimages.bundle.build(images_dir))
    await nursery.start(runtime.run)
    manager = SandboxManager(
        runtime, ImageStore(images_dir), tmp_path, max_sandboxes=4, start_timeout=30, output_limit=1 << 20
    )
    with trio.move_on_after(delay):
        await manager.create(str(uuid.uuid4()), "default")
    await manager.destroy_all()
    assert await runtime.running() == set()
    assert await runtime.leftovers() == set()
    assert list((tmp_path / "sandboxes").iterdir()) == []


async def test_destroy_during_create_cancels_it(tmp_path: Path, images_dir: Path, nursery: trio.Nursery) -> None:
    runtime = LxcRuntime(tmp_path / "lxc", vmimages.bundle.build(images_dir))
    await nursery.start(runtime.run)
    manager = SandboxManager(
        runtime, ImageStore(images_dir), tmp_path, max_sandboxes=4, start_timeout=30, output_limit=1 << 20
    )
    sandbox_id = str(uuid.uuid4())
    outcome: list[BaseException] = []

    async def create() -> None:
        try:
            await manager.create(sandbox_id, "default")
        except errors.ApiError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(create)

        # Poll every scheduler tick: the create spends tens of milliseconds in
        # worker threads, so the destroy lands while it is still in flight.
        with trio.fail_after(10):
            while not any(s.id == sandbox_id and s.status == "creating" for s in manager.sandboxes()):
                await trio.sleep(0)
        await manager.destroy(sandbox_id)
    assert outcome and isinstance(outcome[0], errors.Conflict)
    assert await runtime.leftovers() == set()
    assert manager.sandboxes() == []


async def test_capacity_is_enforced(nursery: trio.Nursery, tmp_path: Path, images_dir: Path) -> None:
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", agent_overrides={"max_sandboxes": 1}
    )
    try:
        first = await system.client.post("/v1/sessions", json={"ephemeral": True})
        assert first.status_code == 201
        second = await system.client.post("/v1/sessions", json={"ephemeral": True})
        assert second.status_code == 503
        assert second.json()["error"]["code"] == "no_capacity"
        await system.client.delete(f"/v1/sessions/{first.json()['id']}")
        third = await system.client.post("/v1/sessions", json={"ephemeral": True})
        assert third.status_code == 201
        await system.client.delete(f"/v1/sessions/{third.json()['id']}")
    finally:
        await stop_system(system)
