"""Sessions from registry images: a real registry on loopback, images built and pushed by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import System, start_system, stop_system
from tests.registry_support import BuiltImage, Entry, Registry, busybox_layer, running_registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    yield from running_registry(tmp_path / "registry")


def registry_agent(registry: Registry, **registry_settings: Any) -> dict[str, Any]:
    """Agent settings that let it pull from the test's registry (and only from it)."""
    return {"registry": {"allowed": [registry.host], "tag_ttl": 0, **registry_settings}}


@pytest.fixture
async def pulling_system(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, registry: Registry
) -> AsyncIterator[System]:
    running = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'chaser.db'}", agent_overrides=registry_agent(registry)
    )
    try:
        yield running
    finally:
        await stop_system(running)


async def run(system: System, session_id: str, command: str) -> str:
    ran = await system.client.post("/v1/exec", json={"session_id": session_id, "command": command})
    assert ran.status_code == 200, ran.text
    return str(ran.json()["output"])


async def test_session_from_a_registry_image_runs_its_config_and_keeps_its_digest(
    pulling_system: System, registry: Registry, tmp_path: Path
) -> None:
    first = BuiltImage(
        [busybox_layer(Entry("marker", b"first\n"), Entry("work/", type=b"5", mode=0o755))],
        env=["PATH=/bin", "GREETING=hello"],
        working_dir="/work",
    )
    digest = await registry.push(first, "team/tool:1", tmp_path)
    reference = f"{registry.host}/team/tool:1"

    created = await pulling_system.client.post("/v1/sessions", json={"ephemeral": True, "image": reference})
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["image"] == reference
    assert session["image_digest"] == digest
    assert await run(pulling_system, session["id"], "echo $GREETING from $(pwd); cat /marker") == (
        "hello from /work\nfirst\n"
    )
    # Files are the container root's, in its own user namespace.
    assert await run(pulling_system, session["id"], "stat -c %u:%g /bin/busybox /marker") == "0:0\n0:0\n"

    # The tag moves: the running session keeps what it started with; a new one gets the new image.
    second = BuiltImage([busybox_layer(Entry("marker", b"second\n"))], env=["PATH=/bin"])
    moved = await registry.push(second, "team/tool:1", tmp_path)
    assert moved != digest
    assert await run(pulling_system, session["id"], "cat /marker") == "first\n"
    again = await pulling_system.client.get(f"/v1/sessions/{session['id']}")
    assert again.json()["image_digest"] == digest
    newer = await pulling_system.client.post("/v1/sessions", json={"ephemeral": True, "image": reference})
    assert newer.status_code == 201, newer.text
    assert newer.json()["image_digest"] == moved
    assert await run(pulling_system, newer.json()["id"], "cat /marker; pwd") == "second\n/root\n"


async def test_the_guides_image_runs_verbatim_from_a_mirror_and_a_missing_one_is_named(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, registry: Registry
) -> None:
    """The operator mirrors ghcr.io to the test registry: the CI guide's image name works as written."""
    await registry.push(BuiltImage([busybox_layer(Entry("marker", b"dev\n"))]), "example/dev:latest", tmp_path)
    settings = registry_agent(registry, hosts={"ghcr.io": {"mirrors": [registry.host]}})
    settings["registry"]["allowed"] = ["ghcr.io"]
    # The seeds' alias of this name (the other tests' stand-in) is off here: the real image runs.
    system = await start_system(
        nursery,
        tmp_path,
        images_dir,
        f"sqlite:///{tmp_path / 'chaser.db'}",
        agent_overrides={**settings, "image_aliases": {}},
    )
    try:
        created = await system.client.post(
            "/v1/sessions", json={"ephemeral": True, "image": "ghcr.io/example/dev:latest"}
        )
        assert created.status_code == 201, created.text
        assert await run(system, created.json()["id"], "cat /marker") == "dev\n"

        missing = await system.client.post("/v1/sessions", json={"ephemeral": True, "image": "ghcr.io/example/none:1"})
        assert missing.status_code == 404, missing.text
        assert missing.json()["error"]["code"] == "image_not_found"
        assert "ghcr.io/example/none:1" in missing.json()["error"]["message"]
    finally:
        await stop_system(system)
