"""Workspaces across agent restarts, crashes and several hosts."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import trio

from agent.main import serve as serve_agent
from agent.storage import mounts
from tests.conftest import Server, agent_config
from tests.pools import loops_of
from tests.workspace_support import exec_on, ok, start_workspace_system, stop_workspace_system


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


async def test_agent_restart_keeps_workspace_mount_and_removes_debris(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, pool: Path
) -> None:
    system = await start_workspace_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", pool,
        agent_overrides={"destroy_on_shutdown": False},
    )  # fmt: skip
    try:
        ok(await system.client.post("/v1/workspaces", json={"name": "durable"}), 201)
        session = ok(await system.client.post("/v1/sessions", json={"workspace": "durable"}), 201)
        assert (await exec_on(system, {"session_id": session["id"]}, "echo before > f"))["exit_code"] == 0
        await system.agent.stop()

        # What a crash mid-way leaves: an import's mount of a staged disk,
        # a loop device nobody mounted, a half-copied file; and the kept
        # session's filesystem frozen by a snapshot that never finished.
        state = system.lxc_path.parent
        staged = pool / "staging" / f"{uuid.uuid4()}.img"
        _run("truncate", "-s", "64M", str(staged))
        _run("mkfs.ext4", "-q", str(staged))
        stray_mount = state / "mounts" / f"import-{uuid.uuid4()}"
        stray_mount.mkdir()
        _run("mount", "-o", "loop", str(staged), str(stray_mount))
        stray_loop = _run("losetup", "--find", "--show", str(staged))
        (pool / "staging" / "half-copied.img").write_bytes(b"x" * 4096)
        kept_mount = state / "mounts" / session["id"]
        _run("fsfreeze", "--freeze", str(kept_mount))
        assert len(loops_of(pool)) == 3

        system.agent.config.destroy_on_shutdown = True
        await system.agent.start(nursery)
        assert mounts.mounts_under(state / "mounts") == [kept_mount]
        assert loops_of(pool) != [] and stray_loop not in loops_of(pool)
        assert len(loops_of(pool)) == 1
        assert list((pool / "staging").iterdir()) == []

        async def thawed_and_readopted() -> bool:
            response = await system.client.post(
                "/v1/exec", json={"session_id": session["id"], "command": "cat f; echo after >> f", "timeout_ms": 5000}
            )
            return response.status_code == 200 and response.json()["output"] == "before\n"

        with trio.fail_after(15):
            while not await thawed_and_readopted():
                await trio.sleep(0.05)
        ok(await system.client.delete(f"/v1/sessions/{session['id']}"))
        again = ok(await system.client.post("/v1/exec", json={"workspace": "durable", "command": "cat f"}))
        assert again["output"] == "before\nafter\n"
    finally:
        await stop_workspace_system(system, pool)


async def test_sessions_go_to_the_host_holding_the_disk(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, pool: Path
) -> None:
    system = await start_workspace_system(nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", pool)
    other = Server(
        serve_agent,
        agent_config(tmp_path / "other-agent", images_dir, system.api_url, system.token, max_sandboxes=2),
    )
    try:
        ok(await system.client.post("/v1/workspaces", json={"name": "pinned"}), 201)
        await other.start(nursery)  # the best fit from now on: fewer free slots
        other_lxc = tmp_path / "other-agent" / "lxc"
        ephemeral = ok(await system.client.post("/v1/sessions", json={"ephemeral": True}), 201)
        assert (other_lxc / ephemeral["id"]).exists()
        pinned = ok(await system.client.post("/v1/sessions", json={"workspace": "pinned"}), 201)
        assert pinned["id"] in system.containers()
        for session in (ephemeral, pinned):
            ok(await system.client.delete(f"/v1/sessions/{session['id']}"))

        # With its host gone, the workspace's sessions have nowhere to go.
        await system.agent.stop()

        async def host_silent() -> bool:
            response = await system.client.post("/v1/sessions", json={"workspace": "pinned"})
            return response.status_code == 503 and response.json()["error"]["code"] == "workspace_host_down"

        with trio.fail_after(20):
            while not await host_silent():
                await trio.sleep(0.1)
    finally:
        await other.stop()
        await stop_workspace_system(system, pool)
    assert not (tmp_path / "other-agent" / "lxc").exists() or list((tmp_path / "other-agent" / "lxc").iterdir()) == []


async def test_sweep_finishes_what_a_crashed_scheduler_left(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, pool: Path
) -> None:
    """A create never finished, a delete never confirmed, a snapshot never recorded: all undone."""
    import time

    import sqlalchemy as sa

    from scheduler.store.schema import workspace_snapshots, workspaces

    system = await start_workspace_system(nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", pool)
    try:
        kept = ok(await system.client.post("/v1/workspaces", json={"name": "kept"}), 201)
        abandoned = ok(await system.client.post("/v1/workspaces", json={"name": "abandoned"}), 201)
        undeleted = ok(await system.client.post("/v1/workspaces", json={"name": "undeleted"}), 201)
        stuck = ok(await system.client.post("/v1/workspaces/kept/snapshots", json={}), 201)
        long_ago = time.time() - 3600

        def crash_states() -> None:
            store = system.store()
            try:
                with store.engine.begin() as conn:
                    conn.execute(
                        workspaces.update()
                        .where(workspaces.c.id == abandoned["id"])
                        .values(status="creating", create_deadline=long_ago)
                    )
                    conn.execute(
                        workspaces.update()
                        .where(workspaces.c.id == undeleted["id"])
                        .values(status="deleting", name_key=None)
                    )
                    conn.execute(
                        workspace_snapshots.update()
                        .where(workspace_snapshots.c.id == stuck["id"])
                        .values(status="creating", create_deadline=long_ago)
                    )
            finally:
                store.close()

        await trio.to_thread.run_sync(crash_states)

        def rows() -> tuple[list[str], int]:
            store = system.store()
            try:
                with store.engine.connect() as conn:
                    names = [r.name for r in conn.execute(sa.select(workspaces.c.name))]
                    snaps = conn.execute(sa.select(sa.func.count()).select_from(workspace_snapshots)).scalar_one()
                return names, snaps
            finally:
                store.close()

        async def swept() -> bool:
            files = {p.name for p in (pool / "disks").iterdir()}
            snapshots = list((pool / "snapshots" / kept["id"]).iterdir())
            return (files, snapshots, await trio.to_thread.run_sync(rows)) == ({f"{kept['id']}.img"}, [], (["kept"], 0))

        with trio.fail_after(20):
            while not await swept():
                await trio.sleep(0.1)
    finally:
        await stop_workspace_system(system, pool)
