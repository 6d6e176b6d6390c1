"""Fixtures that run the real scheduler and agent, over HTTP, on this machine.

Nothing of ours is mocked: sandboxes are real LXC containers over the real
default image, or real QEMU guests (under TCG here) booting the real VM
image; the store is real SQLite or PostgreSQL. Every fixture checks on
teardown that it left no container, VM, overlay, disk, socket or record
behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import httpx
import lxc
import pytest
import sqlalchemy as sa
import trio
from pyroute2 import IPRoute

import vmimages
from agent.config import AgentConfig
from agent.main import serve as serve_agent
from agent.network import links
from agent.network.addressing import SlotPlan
from agent.runtimes.setup import qemu_run_dir
from scheduler.auth import hash_secret, lookup_prefix, new_secret
from scheduler.config import SchedulerConfig
from scheduler.main import serve as serve_scheduler
from scheduler.store import Store

# Workspace fixtures (storage pool on XFS, local Git host) and browser ones
# (a test site in a test-made namespace) live in their own modules.
pytest_plugins = ["tests.workspace_support", "tests.browser_support"]

IMAGES_DIR = Path(os.environ.get("CHASER_TEST_IMAGES_DIR", "/var/lib/chaser/images"))
POSTGRES_URL = os.environ.get("CHASER_TEST_POSTGRES_URL")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Each run's temporary directories below a root of its own, not pytest's shared
    ``pytest-of-root``: pytest makes that 0700 again at every start, which would lock
    containers of a run already going out of their directories (see below)."""
    if config.option.basetemp is not None:
        return
    root = Path(tempfile.gettempdir()) / "chaser-tests"
    root.mkdir(exist_ok=True)
    root.chmod(0o711)
    for old in root.glob("run-*"):
        with contextlib.suppress(ValueError, OSError):
            if not Path(f"/proc/{int(old.name.removeprefix('run-'))}").exists():
                _unmount_below(old)  # a run killed half-way leaves its disks mounted
                shutil.rmtree(old, ignore_errors=True)
    config.option.basetemp = str(root / f"run-{os.getpid()}")


# What a fast test may not ask for: each starts servers, sandboxes or a database.
_SLOW_FIXTURES = frozenset(
    {"system", "sqlite_system", "vm_system", "sandbox_system", "images_dir", "vm_images_dir", "database_url"}
)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Keep the fast layer fast: a test marked ``fast`` starts no agent, scheduler or sandbox."""
    fast = item.get_closest_marker("fast") is not None
    Server.forbidden = fast
    if fast:
        slow = _SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if slow:
            pytest.fail(f"a fast test may not use {', '.join(sorted(slow))}: drop its fast mark", pytrace=False)


def _unmount_below(directory: Path) -> None:
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((p for p in points if p.startswith(f"{directory}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.fixture(autouse=True)
def traversable_tmp_path(tmp_path: Path) -> Path:
    """Let containers' root (an unprivileged host uid) pass through the test's
    directory and the ones above it (pytest makes them 0700), as LXC needs."""
    for directory in [tmp_path, *tmp_path.parents]:
        if directory == Path(tempfile.gettempdir()):
            break
        directory.chmod(directory.stat().st_mode | 0o011)
    return tmp_path


@pytest.fixture(scope="session")
def images_dir() -> Path:
    """The machine's image cache, with the default and browser images built (once)."""
    for name in ("default", "browser"):
        recipe = vmimages.resolve(name)
        assert recipe is not None
        vmimages.build(IMAGES_DIR, recipe)
    return IMAGES_DIR


@pytest.fixture(scope="session")
def vm_images_dir(images_dir: Path) -> Path:
    """The image cache with the default VM image built too (once per change to the guest)."""
    recipe = vmimages.resolve("default-vm")
    assert recipe is not None
    vmimages.build(images_dir, recipe)
    return images_dir


def live_qemus(marker: str | Path) -> list[int]:
    """Pids of live QEMU processes whose command line mentions ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if argv.startswith(b"qemu-system") and str(marker).encode() in argv:
            pids.append(int(entry.name))
    return pids


def _postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    if POSTGRES_URL is None:
        pytest.fail("CHASER_TEST_POSTGRES_URL is not set: run the suite through scripts/test")
    name = f"chaser_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(
        POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'chaser.db'}"
    else:
        yield from _postgres_database()


class Server:
    """A server started in its own cancel scope, so a test can stop and restart it."""

    # Set while a fast test runs (see ``pytest_runtest_setup``).
    forbidden = False

    def __init__(self, serve: Callable[..., Awaitable[None]], config: Any) -> None:
        self.serve = serve
        self.config = config
        self.url = ""
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    async def start(self, nursery: trio.Nursery) -> str:
        assert not Server.forbidden, "a fast test may start no agent or scheduler: drop its fast mark"
        self._stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[str]) -> None:
            try:
                with trio.CancelScope() as self._scope:
                    await self.serve(self.config, task_status=task_status)
            finally:
                self._stopped.set()

        self.url = await nursery.start(run)
        return self.url

    async def stop(self) -> None:
        if self._scope is not None and not self._stopped.is_set():
            self._scope.cancel()
            await self._stopped.wait()


@dataclass
class System:
    """A running scheduler and agent, and a client with a valid key."""

    scheduler: Server
    agent: Server
    api_url: str
    api_key: str
    token: str
    database_url: str
    lxc_path: Path
    qemu_path: Path
    qemu_run_dir: Path
    client: httpx.AsyncClient
    # The image of the sessions the endpoint tests make (``sandbox_system``).
    session_image: str = "default"

    def store(self) -> Store:
        return Store(self.database_url)

    async def new_key(self, email: str, scopes: list[str] | None = None) -> str:
        """A key for another user (and so another personal account)."""
        secret = new_secret()

        def insert() -> None:
            store = self.store()
            try:
                user, account = store.ensure_user(email)
                store.insert_api_key(
                    account_id=account["id"],
                    user_id=user["id"],
                    name="test",
                    prefix=lookup_prefix(secret),
                    secret_hash=hash_secret(secret),
                    scopes=scopes,
                )
            finally:
                store.close()

        await trio.to_thread.run_sync(insert)
        return secret

    def containers(self) -> set[str]:
        if not self.lxc_path.exists():
            return set()
        return set(lxc.list_containers(active=True, defined=True, config_path=str(self.lxc_path)))

    def leftovers(self) -> set[str]:
        found = set()
        for path in (self.lxc_path, self.qemu_path / "sandboxes", self.qemu_path / "bases", self.qemu_run_dir):
            if path.exists():
                found |= {p.name for p in path.iterdir()}
        return found

    def vms(self) -> list[int]:
        """Pids of this agent's live QEMU processes (their disks and consoles are in its state dir)."""
        return live_qemus(self.qemu_path)


def scheduler_config(database_url: str, token: str, api_key: str, **overrides: Any) -> SchedulerConfig:
    values: dict[str, Any] = {
        "bind": "127.0.0.1:0",
        "database_url": database_url,
        "token": token,
        "bootstrap_api_key": api_key,
        "bootstrap_email": "owner@test.invalid",
        "heartbeat_timeout": 2.0,
        "reconcile_interval": 0.2,
        "create_timeout": 30.0,
    }
    return SchedulerConfig.load(None, **{**values, **overrides})


def _routed_networks() -> list[IPv4Network]:
    """Networks the host routes now (main table): another agent's, or debris of a killed run."""
    with IPRoute() as ipr:
        return [
            IPv4Network(f"{route.get('dst')}/{route['dst_len']}", strict=False)
            for route in ipr.get_routes(family=2)
            if route.get("dst")
        ]


def _free_subnet() -> str:
    """A random /24 of 10.200-249 that no route of this host overlaps (an agent refuses one that does)."""
    routed = _routed_networks()
    while True:
        rand = secrets.randbelow(1 << 16)
        subnet = IPv4Network(f"10.{200 + (rand >> 8) % 50}.{rand & 0xFF}.0/24")
        if not any(subnet.overlaps(network) for network in routed):
            return str(subnet)


def network_settings(**overrides: Any) -> dict[str, Any]:
    """Network settings no other agent on this machine uses: own prefix, subnet and table.

    No uplink unless a test gives one: such agents' sessions reach nothing.
    """
    values: dict[str, Any] = {
        "prefix": f"t{secrets.token_hex(3)}",
        "subnet": _free_subnet(),
        "route_table": 10_000 + secrets.randbelow(50_000),
        "pool_size": 2,
        "cooldown": 0.5,
    }
    return {**values, **overrides}


# The seeds' examples name images this machine cannot pull; test agents map
# them to the default image, as an operator would, so the examples run as written.
SEED_IMAGE_ALIASES = {"node:20": "debian:bookworm", "ghcr.io/example/dev:latest": "debian:bookworm"}


def agent_config(
    state_dir: Path, images_dir: Path, scheduler_url: str | None, token: str, **overrides: Any
) -> AgentConfig:
    values: dict[str, Any] = {
        "host_id": f"test-{uuid.uuid4().hex[:8]}",
        "bind": "127.0.0.1:0",
        "state_dir": state_dir,
        "images_dir": images_dir,
        "scheduler_url": scheduler_url,
        "token": token,
        "heartbeat_interval": 0.2,
        "destroy_on_shutdown": True,
        # A template build is a background VM boot: only the tests about it.
        "vm_warm_start": False,
        "network": network_settings(),
        "scratch_size_gb": 8,
        "image_aliases": SEED_IMAGE_ALIASES,
        # No registry at all unless a test names its own (on loopback): nothing reaches the internet.
        "registry": {"allowed": []},
        # Containers started ahead: only the tests about them (each would boot two per agent).
        "warm_pool": {"size": 0},
    }
    return AgentConfig.load(None, **{**values, **overrides})


async def start_system(
    nursery: trio.Nursery,
    tmp_path: Path,
    images_dir: Path,
    database_url: str,
    *,
    scheduler_overrides: dict[str, Any] | None = None,
    agent_overrides: dict[str, Any] | None = None,
) -> System:
    token = secrets.token_urlsafe(32)
    api_key = new_secret()
    scheduler = Server(serve_scheduler, scheduler_config(database_url, token, api_key, **(scheduler_overrides or {})))
    api_url = await scheduler.start(nursery)
    state_dir = tmp_path / "agent"
    config = agent_config(state_dir, images_dir, api_url, token, **(agent_overrides or {}))
    agent = Server(serve_agent, config)
    await agent.start(nursery)
    client = httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    return System(
        scheduler,
        agent,
        api_url,
        api_key,
        token,
        database_url,
        state_dir / "lxc",
        state_dir / "qemu",
        qemu_run_dir(config),
        client,
    )


async def stop_system(system: System) -> None:
    await system.client.aclose()
    await system.agent.stop()
    await system.scheduler.stop()
    assert system.containers() == set(), "containers left running"
    assert system.vms() == [], "VMs left running"
    assert system.leftovers() == set(), "sandbox directories or sockets left behind"
    assert not system.qemu_run_dir.exists(), "VM socket dir left behind"
    if system.agent.config.destroy_on_shutdown:
        assert await network_debris(system.agent.config) == [], "network objects left behind"
        assert not os.path.ismount(system.lxc_path.parent / "disks"), "disks left mounted"


async def network_debris(config: AgentConfig) -> list[str]:
    """What exists of the agent's network: namespaces, links, nftables table, rules, routes."""
    plan = SlotPlan(config.network.prefix, config.network.subnet)
    namespaces, host_links = await trio.to_thread.run_sync(links.own_objects, plan.index_of)
    tables = await trio.run_process(["nft", "list", "tables"], capture_stdout=True)
    rules = await trio.run_process(["ip", "rule"], capture_stdout=True)
    routes = await trio.run_process(
        ["ip", "route", "show", "table", str(config.network.route_table)], capture_stdout=True
    )
    found = sorted(namespaces | host_links)
    found += [t for t in tables.stdout.decode().splitlines() if t.split()[-1:] == [config.network.prefix]]
    found += [r for r in rules.stdout.decode().splitlines() if str(config.network.subnet) in r]
    found += routes.stdout.decode().splitlines()
    return found


@pytest.fixture
async def system(nursery: trio.Nursery, tmp_path: Path, images_dir: Path, database_url: str) -> AsyncIterator[System]:
    running = await start_system(nursery, tmp_path, images_dir, database_url)
    try:
        yield running
    finally:
        await stop_system(running)


VM_AGENT: dict[str, Any] = {"limits": {"default": {"cpus": 1.0, "memory_mb": 256, "pids": 1024, "disk_mb": 4096}}}


@pytest.fixture
async def vm_system(nursery: trio.Nursery, tmp_path: Path, vm_images_dir: Path) -> AsyncIterator[System]:
    """A system whose agent runs VM sessions (SQLite: the database is not the point).

    Its sessions' VMs have 256 MiB unless they ask for more: TCG guests stay small.
    """
    running = await start_system(
        nursery, tmp_path, vm_images_dir, f"sqlite:///{tmp_path / 'chaser.db'}", agent_overrides=VM_AGENT
    )
    try:
        yield running
    finally:
        await stop_system(running)


@pytest.fixture(params=["container", "vm"])
async def sandbox_system(
    request: pytest.FixtureRequest, nursery: trio.Nursery, tmp_path: Path, images_dir: Path
) -> AsyncIterator[System]:
    """For what must hold on both runtimes: sessions are containers, then (same test again) microVMs."""
    overrides: dict[str, Any] = {}
    if request.param == "vm":
        request.getfixturevalue("vm_images_dir")
        overrides = VM_AGENT
    running = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'chaser.db'}", agent_overrides=overrides
    )
    running.session_image = "debian:bookworm-vm" if request.param == "vm" else "default"
    try:
        yield running
    finally:
        await stop_system(running)


@pytest.fixture
async def sqlite_system(nursery: trio.Nursery, tmp_path: Path, images_dir: Path) -> AsyncIterator[System]:
    """For tests about the agent and runtime, where the database does not matter."""
    running = await start_system(nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'chaser.db'}")
    try:
        yield running
    finally:
        await stop_system(running)


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll ``predicate`` until true; fail the test at ``timeout``."""
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.05)
