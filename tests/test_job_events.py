"""Job webhooks: succeeded, failed and canceled reach a real local receiver, signed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import start_system, stop_system, wait_until
from tests.jobs_support import submit, wait_for_job
from tests.tenancy.local_http import WebhookReceiver, serve
from tests.tenancy.test_webhooks import check_signature, make_webhook

EVENTS = ["job.succeeded", "job.failed", "job.canceled"]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    it = WebhookReceiver()
    with serve(it.handle) as url:
        it.url = url + "/hooks/chaser"
        yield it


async def test_job_endings_are_delivered(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, receiver: WebhookReceiver
) -> None:
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}",
        scheduler_overrides={"webhook_block_private_networks": False},
    )  # fmt: skip
    try:
        api = system.client
        await make_webhook(api, receiver.url, EVENTS)
        ok = await submit(api, "sandbox.exec", {"ephemeral": True, "command": "true"})
        bad = await submit(api, "sandbox.exec", {"ephemeral": True, "command": "exit 3"})
        slow = await submit(api, "sandbox.exec", {"ephemeral": True, "command": "sleep 60"})
        await api.post(f"/v1/jobs/{slow['id']}/cancel")
        for job in (ok, bad, slow):
            await wait_for_job(api, job["id"])

        async def all_delivered() -> bool:
            return {r.headers["chaser-event"] for r in receiver.received if r.status == 200} == set(EVENTS)

        await wait_until(all_delivered)
        for r in receiver.received:
            check_signature(r)
        ended = {r.event["data"]["job"]["id"]: r.event["type"] for r in receiver.received}
        assert ended == {ok["id"]: "job.succeeded", bad["id"]: "job.failed", slow["id"]: "job.canceled"}
    finally:
        await stop_system(system)
