"""Per-account quotas: one tenant cannot take every host, nor flood the store.

The attacks: an account opens sessions (or asks each for the whole host)
until nothing is left for anyone else, and fires its creates at once so
that all of them pass a check made before any was counted. Limits come
from the operator (``quotas.default``) and may be changed per account
(``PUT``/``PATCH /v1/quotas``, up to ``quotas.ceiling``); past one, 429
``quota_exceeded`` names it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from chaser.client import Client
from chaser.wire import errors
from tests.conftest import System


async def concurrently(client: httpx.AsyncClient, calls: int, path: str, body: dict[str, Any]) -> list[int]:
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await client.post(path, json=body)).status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            nursery.start_soon(one)
    return sorted(statuses)


def exceeded(response: httpx.Response, limit: str) -> bool:
    error = response.json()["error"]
    return response.status_code == 429 and error["code"] == "quota_exceeded" and error["details"]["limit"] == limit


async def test_quotas_hold_under_concurrent_creates(system: System) -> None:
    api = system.client
    shown = await api.get("/v1/quotas")
    assert shown.status_code == 200, shown.text
    assert shown.json()["usage"]["sessions"] == 0 and shown.json()["limits"]["sessions"] >= 2
    above = await api.put("/v1/quotas", json={"sessions": 10**9})
    assert above.status_code == 422 and above.json()["error"]["code"] == "quota_above_ceiling", above.text
    assert (await api.put("/v1/quotas", json={"sessions": 2, "webhooks": 1})).status_code == 200
    patched = await api.patch("/v1/quotas", json={"cpus": 1.5})
    assert patched.status_code == 200 and patched.json()["limits"]["sessions"] == 2, patched.text

    # Four creates at once for the last two slots: two pass, two are refused.
    body = {"ephemeral": True, "limits": {"cpus": 0.5, "memory_mb": 256}}
    assert await concurrently(api, 4, "/v1/sessions", body) == [201, 201, 429, 429]
    third = await api.post("/v1/sessions", json=body)
    assert exceeded(third, "sessions"), third.text
    usage = (await api.get("/v1/quotas")).json()["usage"]
    assert usage["sessions"] == 2 and usage["cpus"] == 1.0 and usage["memory_mb"] == 512, usage

    # Asking for more of the host than is left.
    assert (await api.patch("/v1/quotas", json={"sessions": 5})).status_code == 200
    greedy = await api.post("/v1/sessions", json={"ephemeral": True, "limits": {"cpus": 1}})
    assert exceeded(greedy, "cpus") and "1.5" in greedy.json()["error"]["message"], greedy.text
    one_shot = await api.post("/v1/exec", json={"ephemeral": True, "command": "true", "limits": {"cpus": 1}})
    assert exceeded(one_shot, "cpus"), one_shot.text

    # Webhooks, eight at once for one slot.
    hook = {"url": "http://1.1.1.1/never-sent", "events": ["job.failed"], "active": False}  # inactive
    assert await concurrently(api, 8, "/v1/webhooks", hook) == [201] + [429] * 7

    # Queued jobs: null goes back to the operator's default.
    assert (await api.patch("/v1/quotas", json={"queued_jobs": 1})).status_code == 200
    later = {"kind": "sandbox.exec", "input": {"ephemeral": True, "command": "true"}, "run_at": "2099-01-01T00:00:00Z"}
    assert (await api.post("/v1/jobs", json=later)).status_code == 201
    flood = await api.post("/v1/jobs", json=later)
    assert exceeded(flood, "queued_jobs"), flood.text
    # ... nor by retrying: a canceled job queued again counts too.
    waiting = (await api.get("/v1/jobs", params={"status": "scheduled"})).json()["jobs"][0]
    assert (await api.post(f"/v1/jobs/{waiting['id']}/cancel")).status_code == 200
    assert (await api.post("/v1/jobs", json=later)).status_code == 201
    again = await api.post(f"/v1/jobs/{waiting['id']}/retry")
    assert exceeded(again, "queued_jobs"), again.text
    reset = await api.patch("/v1/quotas", json={"queued_jobs": None})
    assert reset.json()["limits"]["queued_jobs"] == reset.json()["defaults"]["queued_jobs"], reset.text
    for bad in ({"sessions": -1}, {"nope": 1}, {"cpus": "many"}, []):
        refused = await api.put("/v1/quotas", json=bad)
        assert refused.status_code == 422, (bad, refused.text)

    def through_the_sdk() -> None:
        with Client(system.api_url, system.api_key) as sdk:
            assert sdk.set_quotas(webhooks=2)["limits"]["webhooks"] == 2
            with pytest.raises(errors.TooManyRequests) as full:
                sdk.set_quotas(sessions=0)
                sdk.create_session(ephemeral=True)
            assert full.value.code == "quota_exceeded" and full.value.details["limit"] == "sessions"
            assert sdk.set_quotas(replace=True)["overrides"] == {}
            assert sdk.quotas()["limits"] == sdk.quotas()["defaults"]

    await trio.to_thread.run_sync(through_the_sdk)
    for session in (await api.get("/v1/sessions", params={"status": "running"})).json()["sessions"]:
        assert (await api.delete(f"/v1/sessions/{session['id']}")).status_code == 200
    assert (await api.get("/v1/quotas")).json()["usage"]["sessions"] == 0
