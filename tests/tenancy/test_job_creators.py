"""A job whose creator may no longer act (key revoked, member removed) does not run.

The creator is checked before each attempt, so scheduled jobs and retries
do not outlive the credential that asked for them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.jobs_support import submit, wait_for_job
from tests.tenancy.conftest import Tenants


def soon() -> str:
    return (datetime.now(UTC) + timedelta(seconds=2)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_a_revoked_keys_scheduled_job_never_runs(sqlite_tenants: Tenants) -> None:
    system = sqlite_tenants.system
    made = await system.client.post("/v1/keys", json={"name": "scheduler of jobs"})
    key = made.json()
    run_at = soon()
    async with httpx.AsyncClient(
        base_url=system.api_url, headers={"Authorization": f"Bearer {key['secret']}"}, timeout=30
    ) as leaving:
        job = await submit(leaving, "sandbox.exec", {"ephemeral": True, "command": "echo ran"}, run_at=run_at)
    assert (await system.client.delete(f"/v1/keys/{key['id']}")).status_code < 300
    done = await wait_for_job(system.client, job["id"])
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "creator_revoked", done
    assert "ran" not in (done.get("output") or "")


async def test_a_removed_members_scheduled_job_never_runs(sqlite_tenants: Tenants) -> None:
    owner = await sqlite_tenants.user("boss@test.invalid")
    org = await sqlite_tenants.org(owner)
    added = await owner.post(f"/v1/accounts/{org['id']}/members", json={"email": "temp@test.invalid"})
    assert added.status_code == 201, added.text
    temp = await sqlite_tenants.user("temp@test.invalid", account=org["id"])
    job = await submit(temp, "sandbox.exec", {"ephemeral": True, "command": "echo ran"}, run_at=soon())
    removed = await owner.delete(f"/v1/accounts/{org['id']}/members/temp@test.invalid")
    assert removed.status_code < 300, removed.text
    in_org = {"X-Chaser-Account": org["id"]}
    done = await wait_for_job(owner, job["id"], headers=in_org)
    assert done["status"] == "failed" and done["error"]["code"] == "creator_revoked", done
    # Retried by someone who may act, it runs as theirs.
    assert (await owner.post(f"/v1/jobs/{job['id']}/retry", headers=in_org)).status_code == 200
    assert (await wait_for_job(owner, job["id"], headers=in_org))["status"] == "succeeded"
