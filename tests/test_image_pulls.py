"""Images pulled ahead of time, listed and removed: the real CLI against a real system and registry.

Also the errors a user sees from a pull: a bad reference, an image over
the operator's size limit, a registry that does not answer.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import System, start_system, stop_system
from tests.registry_support import BuiltImage, Entry, Registry, busybox_layer, free_port, running_registry, tar_layer

CHASER = str(Path(sys.executable).parent / "chaser")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    yield from running_registry(tmp_path / "registry")


@pytest.fixture
async def pulling(nursery: trio.Nursery, tmp_path: Path, images_dir: Path, registry: Registry) -> AsyncIterator[System]:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings = {"allowed": [registry.host, dead], "tag_ttl": 0, "max_image_bytes": 8 << 20, "gc_min_age": 0}
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'chaser.db'}", agent_overrides={"registry": settings}
    )
    system.dead_registry = dead  # type: ignore[attr-defined]
    try:
        yield system
    finally:
        await stop_system(system)


async def chaser(system: System, *argv: str, stderr: int | None = None) -> tuple[int, str, str]:
    env = {**os.environ, "CHASER_API_URL": system.api_url, "CHASER_API_KEY": system.api_key}
    where: dict[str, Any] = {"capture_stderr": True} if stderr is None else {"stderr": stderr}
    done = await trio.run_process([CHASER, *argv], env=env, capture_stdout=True, check=False, **where)
    return done.returncode, done.stdout.decode(), (done.stderr or b"").decode()


async def finished(client: httpx.AsyncClient, pull_id: str) -> dict[str, Any]:
    with trio.fail_after(30):
        while True:
            pull = (await client.get(f"/v1/images/{pull_id}")).json()
            if pull["status"] != "pulling":
                return pull  # type: ignore[no-any-return]
            await trio.sleep(0.1)


async def test_pull_list_and_remove_with_the_cli(pulling: System, registry: Registry, tmp_path: Path) -> None:
    layers = [
        busybox_layer(),
        tar_layer([Entry("data", secrets.token_bytes(256 << 10))]),
        tar_layer([Entry("x", b"x")]),
    ]
    digest = await registry.push(BuiltImage(layers), "ahead/tool:2", tmp_path)
    reference = f"{registry.host}/ahead/tool:2"

    # Not a terminal: plain lines of progress on stderr, the result on stdout.
    code, out, err = await chaser(pulling, "images", "pull", reference)
    assert code == 0, err
    assert out.startswith(f"{reference}@{digest} (") and out.endswith(" fetched)\n")
    assert f"{reference}: done 3/3 layers" in err
    assert "\r" not in err

    # The pull resource: what it fetched and how far it got.
    pulls = await pulling.client.get("/v1/audit", params={"action": "image.pull"})
    pull_id = pulls.json()["events"][0]["resource"]["id"]
    pull = (await pulling.client.get(f"/v1/images/{pull_id}")).json()
    assert pull["status"] == "succeeded" and pull["digest"] == digest and pull["error"] is None
    assert pull["progress"]["layers_done"] == pull["progress"]["layers_total"] == 3
    assert pull["progress"]["bytes_done"] == pull["progress"]["bytes_total"] == pull["fetched_bytes"] > 256 << 10

    # On a terminal: a bar redrawn in place (the image is held now: nothing to fetch).
    main, follower = os.openpty()
    try:
        code, out, _ = await chaser(pulling, "images", "pull", reference, stderr=follower)
        os.close(follower)
        bar = os.read(main, 65536).decode()
    finally:
        os.close(main)
    assert code == 0 and "0.0 MB fetched" in out
    assert "\r" in bar and f"[{'#' * 30}] 3/3 layers" in bar

    code, out, _ = await chaser(pulling, "images", "list")
    assert code == 0 and out.startswith(digest) and reference in out and "in use" not in out

    # In use by a session: refused; once it ends, removed, and a new pull fetches it again.
    session = await pulling.client.post("/v1/sessions", json={"ephemeral": True, "image": reference})
    assert session.status_code == 201, session.text
    refused = await pulling.client.delete(f"/v1/images/{digest}")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "image_in_use"
    code, out, _ = await chaser(pulling, "images", "--json", "list")
    assert [(i["digest"], i["in_use"], i["hosts"]) for i in json.loads(out)["images"]] == [(digest, True, 1)]
    await pulling.client.delete(f"/v1/sessions/{session.json()['id']}")
    code, out, err = await chaser(pulling, "images", "rm", digest)
    assert code == 0, err
    assert (await pulling.client.get("/v1/images")).json() == {"images": []}
    store = pulling.agent.config.state_dir / "image-store"
    assert [p.name for p in (store / "layers").iterdir()] == [] and list((store / "pulls").iterdir()) == []
    code, _, err = await chaser(pulling, "images", "rm", digest)
    assert code == 1 and "image_not_found" in err

    events = (await pulling.client.get("/v1/audit", params={"resource_type": "image"})).json()["events"]
    assert {"image.pull", "image.delete"} <= {e["action"] for e in events}


async def test_what_a_failed_pull_says(pulling: System, registry: Registry, tmp_path: Path) -> None:
    client = pulling.client
    for body in ({"reference": "Not A Reference"}, {"reference": ""}, {"ref": "x"}, {"reference": 5}):
        bad = await client.post("/v1/images", json=body)
        assert bad.status_code == 422, bad.text
    assert (await client.get("/v1/images/not-an-id")).status_code == 404
    assert (await client.delete("/v1/images/sha256:nothex")).status_code == 404

    # Over the operator's limit: refused from the manifest, before any layer is fetched.
    big = tar_layer([Entry("big", secrets.token_bytes(9 << 20))])
    await registry.push(BuiltImage([busybox_layer(), big]), "ahead/big:1", tmp_path)
    started = await client.post("/v1/images", json={"reference": f"{registry.host}/ahead/big:1"})
    assert started.status_code == 202, started.text
    pull = await finished(client, started.json()["id"])
    assert pull["status"] == "failed" and pull["error"]["code"] == "image_too_large", pull
    assert pull["progress"]["layers_done"] == 0

    missing = await finished(
        client, (await client.post("/v1/images", json={"reference": f"{registry.host}/ahead/none:1"})).json()["id"]
    )
    assert missing["error"]["code"] == "image_not_found"

    # A registry that does not answer: 503, retryable, for a pull and for a session create alike.
    dead = f"{pulling.dead_registry}/ahead/tool:1"  # type: ignore[attr-defined]
    unavailable = await finished(client, (await client.post("/v1/images", json={"reference": dead})).json()["id"])
    assert unavailable["error"]["code"] == "registry_unavailable", unavailable
    created = await client.post("/v1/sessions", json={"ephemeral": True, "image": dead})
    assert created.status_code == 503 and created.json()["error"]["code"] == "registry_unavailable", created.text
    store = pulling.agent.config.state_dir / "image-store"
    assert list((store / "layers").iterdir()) == [] and list((store / "pulls").iterdir()) == []
