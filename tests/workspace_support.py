"""Fixtures for workspace tests: the real system with its storage pool on a real XFS.

The agent's pool is an XFS with reflink on a loop file in the test's temp
dir; scheduler and agent are the same as in ``conftest``. At teardown,
after the agent stopped, no workspace mount and no loop device of the pool
may remain (and the pool's own unmount fails if one did).

The Git host imports clone from listens in a test-made outside world
(``tests.world``); an agent that imports from it gets that world as its
uplink, never the machine's real one.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from agent.storage import mounts
from tests.conftest import System, network_settings, start_system, stop_system
from tests.gitserver import GitHost, git_host
from tests.pools import loops_of, xfs_pool
from tests.world import WEB, listen, open_world

DISK_GB = 1


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Path]:
    with xfs_pool(tmp_path) as mounted:
        yield mounted


@pytest.fixture
async def git_server(tmp_path: Path) -> AsyncIterator[GitHost]:
    """A Git host in the outside world, at http://203.0.113.80."""
    async with open_world([]) as world:
        raw = socket.socket(fileno=(await listen(world, WEB, 80)).detach())
        raw.setblocking(True)  # served by the server's threads, not by trio
        with git_host(tmp_path / "git", raw) as host:
            host.world = world
            yield host


async def start_workspace_system(
    nursery: trio.Nursery,
    tmp_path: Path,
    images_dir: Path,
    database_url: str,
    pool: Path,
    *,
    git: GitHost | None = None,
    scheduler_overrides: dict[str, Any] | None = None,
    agent_overrides: dict[str, Any] | None = None,
) -> System:
    """``start_system`` with the agent's storage on ``pool`` and 1 GiB disks.

    With ``git``, imports clone from that host, through its world as the
    agent's uplink; without, from nowhere.
    """
    git_base_url, agent = "http://127.0.0.1:9", dict(agent_overrides or {})
    if git is not None:
        git_base_url = git.url
        if git.world is not None:
            agent.setdefault("network", network_settings(uplink=git.world.name, uplink_gateway=git.world.gateway))
    return await start_system(
        nursery,
        tmp_path,
        images_dir,
        database_url,
        scheduler_overrides={"workspace_disk_gb": DISK_GB, "git_base_url": git_base_url, **(scheduler_overrides or {})},
        agent_overrides={"storage_dir": pool, **agent},
    )


async def stop_workspace_system(system: System, pool: Path) -> None:
    await stop_system(system)
    state_dir = system.lxc_path.parent
    assert mounts.mounts_under(state_dir) == [], "workspace mounts left behind"
    assert loops_of(pool) == [], "loop devices left behind"


@pytest.fixture
async def ws_system(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, database_url: str, pool: Path
) -> AsyncIterator[System]:
    """Scheduler + agent with a storage pool, over SQLite and PostgreSQL."""
    system = await start_workspace_system(nursery, tmp_path, images_dir, database_url, pool)
    try:
        yield system
    finally:
        await stop_workspace_system(system, pool)


@pytest.fixture
async def ws_sqlite_system(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, pool: Path
) -> AsyncIterator[System]:
    """The same, on SQLite only: for what the database has no part in."""
    system = await start_workspace_system(nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'chaser.db'}", pool)
    try:
        yield system
    finally:
        await stop_workspace_system(system, pool)


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON of a response that must have ``status``; the body in the failure otherwise."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json() if response.content else None


async def exec_on(system: System, target: dict[str, str], command: str) -> dict[str, Any]:
    result: dict[str, Any] = ok(await system.client.post("/v1/exec", json={**target, "command": command}))
    return result
