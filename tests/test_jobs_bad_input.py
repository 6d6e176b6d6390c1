"""Bad job requests get a JSON 4xx naming the problem; ids of other accounts are not found; scopes hold."""

from __future__ import annotations

import uuid

from tests.conftest import System
from tests.jobs_support import submit, wait_for_job

EXEC = {"ephemeral": True, "command": "true"}
NOWHERE = str(uuid.uuid4())

BODIES = [
    # (body, status, code, fragment of the message: the field it names)
    ({"kind": "nope.run", "input": EXEC}, 422, "unknown_kind", "unknown job kind 'nope.run'"),
    ({"input": EXEC}, 422, "invalid_request", "kind: Field required"),
    ({"kind": "sandbox.exec", "input": {"ephemeral": True}}, 422, "invalid_request", "input.command: Field required"),
    ({"kind": "sandbox.exec", "input": {**EXEC, "timeout_ms": "5"}}, 422, "invalid_request", "input.timeout_ms:"),
    ({"kind": "sandbox.exec", "input": {**EXEC, "timeout_ms": 0}}, 422, "invalid_request", "input.timeout_ms:"),
    ({"kind": "sandbox.exec", "input": {**EXEC, "bogus": 1}}, 422, "invalid_request", "input.bogus: Extra inputs"),
    ({"kind": "sandbox.exec", "input": {"command": "x"}}, 422, "invalid_request", "input: Value error, give exactly"),
    ({"kind": "sandbox.exec", "input": "npm test"}, 422, "invalid_request", "input: Input should be a valid dict"),
    (
        {"kind": "pipeline.run", "input": {"ephemeral": True, "steps": [{"command": "x", "timeout_ms": -1}]}},
        422,
        "invalid_request",
        "input.steps.0.timeout_ms:",
    ),
    ({"kind": "pipeline.run", "input": {"workspace": "w", "steps": []}}, 422, "invalid_request", "input.steps:"),
    ({"kind": "session.terminate", "input": {"session_id": "x"}}, 422, "invalid_request", "input.session_id:"),
    ({"kind": "session.bulk_terminate", "input": {"session_ids": []}}, 422, "invalid_request", "input.session_ids:"),
    ({"kind": "sandbox.exec", "input": EXEC, "run_at": "tomorrow"}, 422, "invalid_run_at", "run_at: 'tomorrow'"),
    ({"kind": "sandbox.exec", "input": EXEC, "run_at": "2025-03-15"}, 422, "invalid_run_at", "run_at:"),
    ({"kind": "sandbox.exec", "input": EXEC, "run_at": "2025-03-15T10:00:00"}, 422, "invalid_run_at", "run_at:"),
    ({"kind": "sandbox.exec", "input": EXEC, "run_at": "2025-02-30T10:00:00Z"}, 422, "invalid_run_at", "run_at:"),
    ({"kind": "sandbox.exec", "input": EXEC, "run_at": 1741989600}, 422, "invalid_request", "run_at:"),
    ({"kind": "sandbox.exec", "input": EXEC, "idempotency_key": ""}, 422, "invalid_request", "idempotency_key:"),
    ({"kind": "sandbox.exec", "input": EXEC, "priority": 1}, 422, "invalid_request", "priority: Extra inputs"),
]


async def test_bad_job_bodies(system: System) -> None:
    # One system for all cases: they only reach validation, so the cases are a loop, not fixtures.
    for body, status, code, fragment in BODIES:
        response = await system.client.post("/v1/jobs", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == code and fragment in error["message"], (body, error)
    assert (await system.client.get("/v1/jobs")).json()["jobs"] == []


REQUESTS = [
    ("POST", "/v1/jobs", b"{not json", 400, "invalid_json"),
    ("POST", "/v1/jobs", b"[]", 422, "invalid_request"),
    ("GET", "/v1/jobs?status=zombie", b"", 422, "invalid_request"),
    ("GET", "/v1/jobs?limit=0", b"", 422, "invalid_request"),
    ("GET", "/v1/jobs?cursor=%%%", b"", 422, "invalid_cursor"),
    ("GET", "/v1/jobs?bogus=1", b"", 422, "invalid_request"),
    ("GET", "/v1/jobs/not-a-uuid", b"", 404, "job_not_found"),
    ("GET", f"/v1/jobs/{NOWHERE}", b"", 404, "job_not_found"),
    ("POST", f"/v1/jobs/{NOWHERE}/cancel", b"", 404, "job_not_found"),
    ("POST", f"/v1/jobs/{NOWHERE}/retry", b"", 404, "job_not_found"),
    ("DELETE", "/v1/jobs/kinds", b"", 405, "method_not_allowed"),
]


async def test_bad_job_requests(system: System) -> None:
    for method, path, body, status, code in REQUESTS:
        headers = {"Content-Type": "application/json"} if body else {}
        response = await system.client.request(method, path, content=body, headers=headers)
        assert response.status_code == status, (path, response.text)
        assert response.json()["error"]["code"] == code, (path, response.text)


async def test_other_accounts_jobs_are_not_found(sqlite_system: System) -> None:
    system = sqlite_system
    mine = await submit(system.client, "sandbox.exec", {"ephemeral": True, "command": "exit 1"})
    await wait_for_job(system.client, mine["id"])
    intruder = {"Authorization": f"Bearer {await system.new_key('intruder@test.invalid')}"}
    for method, path in [
        ("GET", f"/v1/jobs/{mine['id']}"),
        ("POST", f"/v1/jobs/{mine['id']}/cancel"),
        ("POST", f"/v1/jobs/{mine['id']}/retry"),
    ]:
        response = await system.client.request(method, path, headers=intruder)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "job_not_found"
    assert (await system.client.get("/v1/jobs", headers=intruder)).json()["jobs"] == []
    assert (await system.client.get(f"/v1/jobs/{mine['id']}")).json()["attempt"] == 1  # untouched


async def test_scopes_follow_the_kind(sqlite_system: System) -> None:
    system = sqlite_system
    ci = {"Authorization": f"Bearer {await system.new_key('ci@test.invalid', scopes=['exec.write'])}"}
    job = (await system.client.post("/v1/jobs", headers=ci, json={"kind": "sandbox.exec", "input": EXEC})).json()
    assert (await wait_for_job(system.client, job["id"], headers=ci))["status"] == "succeeded"
    denied = await system.client.post(
        "/v1/jobs", headers=ci, json={"kind": "session.terminate", "input": {"session_id": NOWHERE}}
    )
    assert denied.status_code == 403 and "sessions.write" in denied.json()["error"]["message"]
    assert (await system.client.get("/v1/jobs/kinds", headers=ci)).status_code == 200

    assert [j["id"] for j in (await system.client.get("/v1/jobs", headers=ci)).json()["jobs"]] == [job["id"]]

    # A read-only key of the same account sees exec jobs, but cannot make, retry or stop them.
    reader = {"Authorization": f"Bearer {await system.new_key('ci@test.invalid', scopes=['sessions.read'])}"}
    assert (await system.client.get(f"/v1/jobs/{job['id']}", headers=reader)).status_code == 200
    for method, path, body in [
        ("POST", "/v1/jobs", {"kind": "sandbox.exec", "input": EXEC}),
        ("POST", f"/v1/jobs/{job['id']}/retry", None),
        ("POST", f"/v1/jobs/{job['id']}/cancel", None),
    ]:
        response = await system.client.request(method, path, json=body, headers=reader)
        assert response.status_code == 403 and "exec.write" in response.json()["error"]["message"]

    # A key with neither scope of a kind sees none of its jobs.
    keys_only = {"Authorization": f"Bearer {await system.new_key('ci@test.invalid', scopes=['keys.read'])}"}
    assert (await system.client.get("/v1/jobs", headers=keys_only)).json()["jobs"] == []
    hidden = await system.client.get(f"/v1/jobs/{job['id']}", headers=keys_only)
    assert hidden.status_code == 403 and "sessions.read" in hidden.json()["error"]["message"]
