"""Workspace webhooks: created, snapshot taken, deleted — delivered to a real local receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import wait_until
from tests.tenancy.local_http import WebhookReceiver, serve
from tests.tenancy.test_webhooks import check_signature, make_webhook
from tests.workspace_support import ok, start_workspace_system, stop_workspace_system

EVENTS = ["workspace.created", "snapshot.created", "workspace.deleted"]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    it = WebhookReceiver()
    with serve(it.handle) as url:
        it.url = url + "/hooks/chaser"
        yield it


async def test_workspace_events_are_delivered(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, pool: Path, receiver: WebhookReceiver
) -> None:
    system = await start_workspace_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", pool,
        scheduler_overrides={"webhook_block_private_networks": False, "webhook_retry_base": 0.2},
    )  # fmt: skip
    try:
        api = system.client
        await make_webhook(api, receiver.url, EVENTS)
        workspace = ok(await api.post("/v1/workspaces", json={"name": "hooked"}), 201)
        snapshot = ok(await api.post("/v1/workspaces/hooked/snapshots", json={}), 201)
        assert (await api.delete("/v1/workspaces/hooked")).status_code == 204

        async def all_delivered() -> bool:
            return {r.headers["chaser-event"] for r in receiver.received if r.status == 200} == set(EVENTS)

        await wait_until(all_delivered)
        for r in receiver.received:
            check_signature(r)
        assert receiver.of_type("workspace.created")[0].event["data"]["workspace"]["id"] == workspace["id"]
        assert receiver.of_type("snapshot.created")[0].event["data"]["snapshot"]["id"] == snapshot["id"]
        assert receiver.of_type("workspace.deleted")[0].event["data"]["workspace"]["name"] == "hooked"
    finally:
        await stop_workspace_system(system, pool)
