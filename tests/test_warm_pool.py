"""Containers started ahead of requests: the pool's bookkeeping alone, then for real.

The pool's rules (fill to size per image while the host has room, hand each
out once, back off when a start fails, leave nothing at exit) are tested
with in-memory boots under trio's fake clock. Then a real agent with a pool
shows what a user would: a session takes a started container, under its own
id, with its own network policy applied only then (a started container
reaches nothing), a request the pool cannot serve boots as before, and a
restarted agent still knows the adopted container by its session's id.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from agent.sandboxes.warm_pool import WarmPool
from tests.conftest import System, network_settings, start_system, stop_system, wait_until
from tests.test_isolation import PROBE, new_session, probe, run
from tests.world import WEB, World, open_world

# -- the pool alone ----------------------------------------------------------


class Host:
    """In-memory boots: names handed out, what was discarded, room left, failures to come."""

    def __init__(self, room: int = 10, failures: int = 0) -> None:
        self.room = room
        self.failures = failures
        self.discarded: list[str] = []
        self.boots = 0
        self._names = itertools.count()

    async def boot(self, kind: str) -> str:
        await trio.sleep(0.05)
        self.boots += 1
        if self.failures:
            self.failures -= 1
            raise RuntimeError("image is broken")
        return f"{kind}-{next(self._names)}"

    async def discard(self, item: str) -> None:
        self.discarded.append(item)

    def pool(self, kinds: list[str], size: int) -> WarmPool[str]:
        pool: WarmPool[str] = WarmPool(
            kinds, size, boot=self.boot, discard=self.discard, room=lambda: self.room - len(pool)
        )
        return pool


@pytest.mark.fast
async def test_fills_each_image_to_size_and_hands_each_out_once(autojump_clock: trio.testing.MockClock) -> None:
    host = Host()
    pool = host.pool(["a", "b"], 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await trio.sleep(1)
        assert pool.ready() == {"a": 2, "b": 2}
        taken = [pool.take("a"), pool.take("a"), pool.take("a")]
        assert taken[2] is None and taken[0] != taken[1]
        assert pool.take("c") is None
        await trio.sleep(1)
        assert pool.ready() == {"a": 2, "b": 2}
        assert not {pool.take("a"), pool.take("a")} & set(taken)
        nursery.cancel_scope.cancel()
    assert host.boots == 4 + 2  # the first fill, then one per container taken before the last check


@pytest.mark.fast
async def test_fills_only_while_the_host_has_room(autojump_clock: trio.testing.MockClock) -> None:
    host = Host(room=0)
    pool = WarmPool(["a"], 3, boot=host.boot, discard=host.discard, room=lambda: host.room - len(pool))
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await trio.sleep(5)
        assert pool.ready() == {"a": 0}
        host.room = 2  # sessions ended: the pool sees it within its recheck
        await trio.sleep(5)
        assert pool.ready() == {"a": 2}
        assert await pool.shrink() is True
        assert pool.ready() == {"a": 1} and len(host.discarded) == 1
        nursery.cancel_scope.cancel()


@pytest.mark.fast
async def test_a_failing_boot_backs_off_then_recovers(autojump_clock: trio.testing.MockClock) -> None:
    host = Host(failures=4)
    pool = host.pool(["a"], 1)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await trio.sleep(3)
        assert host.boots <= 3, "a broken image must not make a busy loop"
        await trio.sleep(30)
        assert pool.ready() == {"a": 1}
        nursery.cancel_scope.cancel()


@pytest.mark.fast
async def test_what_was_never_taken_is_discarded_at_exit(autojump_clock: trio.testing.MockClock) -> None:
    host = Host()
    pool = host.pool(["a"], 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await trio.sleep(1)
        taken = pool.take("a")
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert len(host.discarded) == 2 and taken not in host.discarded
    assert pool.ready() == {"a": 0}


# -- for real ----------------------------------------------------------------


@pytest.fixture
async def world(nursery: trio.Nursery) -> AsyncIterator[World]:
    async with open_world([(WEB, 8080)]) as made:
        yield made


async def start_pooled(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, world: World, **overrides: object
) -> System:
    network = network_settings(uplink=world.name, uplink_gateway=world.gateway)
    return await start_system(
        nursery,
        tmp_path,
        images_dir,
        f"sqlite:///{tmp_path / 'db'}",
        agent_overrides={"network": network, "warm_pool": {"size": 1}, **overrides},
    )


def started_ahead(system: System) -> dict[str, str | None]:
    """The agent's containers started ahead: name -> the session id it was adopted under, if any."""
    found: dict[str, str | None] = {}
    for home in system.lxc_path.glob("warm-*"):
        record = home / "sandbox-id"
        found[home.name] = record.read_text() if record.exists() else None
    return found


async def pool_is_full(system: System) -> bool:
    """Whether the agent says its started container is ready (its directory appears before)."""
    headers = {"Authorization": f"Bearer {system.token}"}
    host = (await system.client.get(system.agent.url + "/v1/host", headers=headers)).json()
    return bool(host["capacity"]["warm"] == {"debian:bookworm": 1})


async def test_a_session_takes_a_started_container_with_its_own_policy(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, world: World
) -> None:
    system = await start_pooled(nursery, tmp_path, images_dir, world)
    try:
        await wait_until(lambda: pool_is_full(system))
        [ahead] = started_ahead(system)
        # Before anyone takes it, the started container reaches nothing
        # (a probe from its network namespace, with its address).
        inside = await trio.run_process(
            ["nsenter", f"--net={_netns_of(system, ahead)}", sys.executable, "-c", PROBE, WEB, "8080"],
            capture_stdout=True,
        )
        assert inside.stdout.decode().startswith("blocked")

        session = await new_session(system)
        assert started_ahead(system)[ahead] == session["id"], "the session did not get the started container"
        assert (await run(system, session, "hostname && id -u"))["output"] == "sandbox\n0\n"
        assert await probe(system, session, WEB, 8080) == "open"

        await wait_until(lambda: pool_is_full(system))
        offline = await new_session(system, network="none")
        assert offline["id"] in started_ahead(system).values()
        assert (await probe(system, offline, WEB, 8080)).startswith("blocked")

        # Limits of its own: the pool's containers have the defaults, so this one boots.
        sized = await new_session(system, limits={"memory_mb": 300})
        assert sized["id"] not in started_ahead(system).values()
        assert (system.lxc_path / sized["id"]).is_dir()

        for made in (session, offline, sized):
            assert (await system.client.delete(f"/v1/sessions/{made['id']}")).status_code == 200
        assert set(started_ahead(system).values()) <= {None}
    finally:
        await stop_system(system)


def _netns_of(system: System, name: str) -> Path:
    """The network namespace the started container ``name`` shares (its pooled slot)."""
    config = (system.lxc_path / name / "config").read_text()
    [line] = [line for line in config.splitlines() if line.startswith("lxc.namespace.share.net")]
    return Path(line.split("=", 1)[1].strip())


async def test_an_adopted_container_survives_an_agent_restart_under_its_session_id(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, world: World
) -> None:
    system = await start_pooled(nursery, tmp_path, images_dir, world, destroy_on_shutdown=False)
    try:
        await wait_until(lambda: pool_is_full(system))
        session = await new_session(system)
        write = {"session_id": session["id"], "command": "echo kept > /root/state"}
        assert (await system.client.post("/v1/exec", json=write)).json()["exit_code"] == 0

        await system.agent.stop()
        assert list(started_ahead(system).values()) == [session["id"]], (
            "the unused started container outlived its agent"
        )

        system.agent.config.destroy_on_shutdown = True
        await system.agent.start(nursery)

        async def execs() -> bool:
            read = {"session_id": session["id"], "command": "cat /root/state"}
            return (await system.client.post("/v1/exec", json=read)).json().get("output") == "kept\n"

        await wait_until(execs)
        assert (await system.client.delete(f"/v1/sessions/{session['id']}")).status_code == 200
        assert session["id"] not in started_ahead(system).values()
    finally:
        await stop_system(system)
