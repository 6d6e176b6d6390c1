"""Webhooks against a real HTTP receiver on 127.0.0.1 that the tests start.

Deliveries are checked the way a receiver would check them: the signature
is recomputed here from the raw body with hmac/hashlib, not with our code.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import wait_until
from tests.tenancy.conftest import Issuer, Tenants, open_tenants
from tests.tenancy.local_http import Received, WebhookReceiver, serve

SECRET = "whsec_test_0123456789abcdef"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    it = WebhookReceiver()
    with serve(it.handle) as url:
        it.url = url + "/hooks/chaser"
        yield it
    if it.hold is not None:
        it.hold.set()


def check_signature(received: Received, secret: str = SECRET) -> None:
    header = received.headers["chaser-signature"]
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected), "signature does not match"
    assert abs(time.time() - int(fields["t"])) < 300


async def make_webhook(api: httpx.AsyncClient, url: str, events: list[str], **extra: object) -> dict[str, object]:
    created = await api.post("/v1/webhooks", json={"url": url, "events": events, "secret": SECRET, **extra})
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


async def test_session_events_are_signed_retried_and_logged(tenants: Tenants, receiver: WebhookReceiver) -> None:
    api = tenants.system.client
    receiver.statuses = [500]  # the first delivery fails once, then the receiver recovers
    hook = await make_webhook(api, receiver.url, ["session.created", "session.terminated"])
    assert hook["secret"] == SECRET

    session = (await api.post("/v1/sessions", json={"ephemeral": True})).json()
    await api.delete(f"/v1/sessions/{session['id']}")

    async def both_delivered() -> bool:
        ok = {r.headers["chaser-event"] for r in receiver.received if r.status == 200}
        return ok == {"session.created", "session.terminated"}

    await wait_until(both_delivered)
    created = receiver.of_type("session.created")
    assert [r.status for r in created] == [500, 200]
    # A retry is the same delivery of the same event, signed afresh.
    assert created[0].headers["chaser-delivery"] == created[1].headers["chaser-delivery"]
    assert created[0].event == created[1].event
    for r in receiver.received:
        check_signature(r)
        assert r.headers["content-type"] == "application/json"
    event = created[1].event
    assert event["type"] == "session.created"
    assert event["data"]["session"]["id"] == session["id"]
    assert event["data"]["session"]["status"] == "running"
    terminated = receiver.of_type("session.terminated")[-1].event
    assert terminated["data"]["session"]["status"] == "terminated"
    assert terminated["data"]["session"]["status_reason"] == "terminated by request"

    log = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
    by_type = {d["event_type"]: d for d in log}
    first = by_type["session.created"]
    assert first["status"] == "succeeded" and first["attempts"] == 2
    assert [a["status_code"] for a in first["attempts_log"]] == [500, 200]
    assert first["attempts_log"][0]["error"] == "HTTP 500"
    assert first["payload"] == event
    assert by_type["session.terminated"]["attempts"] == 1
    succeeded = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "succeeded"})).json()
    assert len(succeeded["deliveries"]) == 2


async def test_outbox_survives_a_scheduler_restart(
    nursery: trio.Nursery, tenants: Tenants, receiver: WebhookReceiver
) -> None:
    api = tenants.system.client
    receiver.then = 503  # down for now
    hook = await make_webhook(api, receiver.url, ["session.created"])
    assert (await api.post(f"/v1/webhooks/{hook['id']}/ping")).status_code == 202

    async def tried() -> bool:
        return len(receiver.received) >= 1

    await wait_until(tried)
    await tenants.system.scheduler.stop()
    receiver.then = 200
    attempts_before = len(receiver.received)

    url = await tenants.system.scheduler.start(nursery)  # the same database, a new process state

    async def delivered() -> bool:
        return any(r.status == 200 for r in receiver.received)

    await wait_until(delivered)
    pings = receiver.of_type("webhook.ping")
    assert len({r.headers["chaser-delivery"] for r in pings}) == 1, "one delivery, retried"
    assert [r.status for r in pings].count(200) == 1, "delivered exactly once"
    assert len(pings) > attempts_before
    check_signature(pings[-1])
    async with httpx.AsyncClient(base_url=url, headers=dict(api.headers)) as restarted:
        [delivery] = (await restarted.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
    assert delivery["status"] == "succeeded"
    assert delivery["attempts"] == len(pings)


async def test_a_slow_receiver_never_blocks_the_api(tenants: Tenants, receiver: WebhookReceiver) -> None:
    api = tenants.system.client
    receiver.hold = threading.Event()  # the receiver hangs until released
    hook = await make_webhook(api, receiver.url, ["session.created"])
    assert (await api.post(f"/v1/webhooks/{hook['id']}/ping")).status_code == 202
    with trio.fail_after(20):  # far shorter than the receiver's hang (30 s)
        for _ in range(5):
            assert (await api.get("/v1/webhooks")).status_code == 200
            assert (await api.post(f"/v1/webhooks/{hook['id']}/ping")).status_code == 202

    async def timed_out() -> bool:
        log = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
        return any(a["error"] == "no response within 3s" for d in log for a in d["attempts_log"])

    await wait_until(timed_out, timeout=30)  # the per-attempt deadline (3 s here) ends a hung send
    receiver.hold.set()

    async def all_delivered() -> bool:
        log = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
        return len(log) == 6 and all(d["status"] == "succeeded" for d in log)

    await wait_until(all_delivered, timeout=30)


async def test_webhook_crud_and_validation(tenants: Tenants, receiver: WebhookReceiver) -> None:
    api = tenants.system.client
    bad = [
        {"url": "ftp://127.0.0.1/x", "events": ["session.created"]},
        {"url": "http://user:pw@127.0.0.1/x", "events": ["session.created"]},
        {"url": receiver.url, "events": ["session.exploded"]},
        {"url": receiver.url, "events": []},
        {"url": receiver.url, "events": ["session.created"], "secret": "short"},
        {"url": receiver.url, "events": ["session.created"], "colour": "red"},
        {"url": receiver.url},
    ]
    for body in bad:
        response = await api.post("/v1/webhooks", json=body)
        assert response.status_code == 422, (body, response.text)
    generated = await api.post("/v1/webhooks", json={"url": receiver.url, "events": ["session.created"]})
    assert generated.status_code == 201
    assert generated.json()["secret"].startswith("whsec_")
    hook_id = generated.json()["id"]

    listed = (await api.get("/v1/webhooks")).json()["webhooks"]
    assert [h["id"] for h in listed] == [hook_id]
    assert "secret" not in listed[0]
    fetched = (await api.get(f"/v1/webhooks/{hook_id}")).json()
    assert "secret" not in fetched and fetched["events"] == ["session.created"]

    patched = await api.patch(f"/v1/webhooks/{hook_id}", json={"active": False, "events": ["job.failed", "job.failed"]})
    assert patched.status_code == 200
    assert patched.json()["active"] is False and patched.json()["events"] == ["job.failed"]
    assert (await api.patch(f"/v1/webhooks/{hook_id}", json={"url": None})).status_code == 422
    assert (await api.post(f"/v1/webhooks/{hook_id}/ping")).status_code == 409
    # An inactive webhook gets nothing.
    session = (await api.post("/v1/sessions", json={"ephemeral": True})).json()
    await api.delete(f"/v1/sessions/{session['id']}")
    assert (await api.get(f"/v1/webhooks/{hook_id}/deliveries")).json()["deliveries"] == []

    assert (await api.delete(f"/v1/webhooks/{hook_id}")).status_code == 204
    assert (await api.get(f"/v1/webhooks/{hook_id}")).status_code == 404
    assert (await api.delete(f"/v1/webhooks/{hook_id}")).status_code == 404
    assert (await api.get("/v1/webhooks/not-an-id")).status_code == 404
    assert receiver.received == []


async def test_private_destinations_are_refused_by_default(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, issuer: Issuer, receiver: WebhookReceiver
) -> None:
    running, stack = await open_tenants(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", issuer, webhook_block_private_networks=True
    )
    async with stack:
        api = running.system.client
        for url in (receiver.url, "http://169.254.169.254/latest/", "http://[::1]:9/", "http://10.0.0.1/"):
            response = await api.post("/v1/webhooks", json={"url": url, "events": ["session.created"]})
            assert response.status_code == 422, url
            assert response.json()["error"]["code"] == "invalid_url"
        # A name is checked where it resolves, before each attempt.
        by_name = receiver.url.replace("127.0.0.1", "localhost")
        hook = await make_webhook(api, by_name, ["session.created"])
        await api.post(f"/v1/webhooks/{hook['id']}/ping")

        async def refused() -> bool:
            log = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
            return bool(log and log[0]["attempts_log"])

        await wait_until(refused)
        log = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["deliveries"]
        assert "not a public address" in log[0]["attempts_log"][0]["error"]
        assert receiver.received == []
