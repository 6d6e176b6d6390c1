"""``/v1/jobs``: the seeds' curl examples (000 CI/CD and 001 Jobs) run as written.

The seeds' image names resolve through the test agent's image aliases
(``SEED_IMAGE_ALIASES``). One edit: the manage examples, whose job id the
seed page lost (``/v1/jobs/``, ``/v1/jobs//cancel``), get it back as
``$JOB_ID``. Workspace examples here find no workspace and fail with the
lookup's 404; ``test_jobs_seed_pipeline`` runs them on a real one.
"""

from __future__ import annotations

import json
import subprocess

from tests.conftest import System
from tests.jobs_support import wait_for_job
from tests.test_exec_api import curl

CI_SINGLE_COMMAND = """
curl -sS "$CHASER_API_URL/v1/jobs" \\
  -H "Authorization: Bearer $CHASER_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "kind": "sandbox.exec",
    "input": {
      "ephemeral": true,
      "image": "ghcr.io/example/dev:latest",
      "command": "npm ci && npm test"
    }
  }' | jq
"""

CI_PIPELINE = """
curl -sS "$CHASER_API_URL/v1/jobs" \\
  -H "Authorization: Bearer $CHASER_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "kind": "pipeline.run",
    "input": {
      "workspace": "ci-project",
      "steps": [
        {"command": "npm ci", "timeout_ms": 300000},
        {"command": "npm run lint", "timeout_ms": 120000},
        {"command": "npm test", "timeout_ms": 600000}
      ]
    }
  }' | jq
"""

JOBS_CREATE = """
curl -sS "$CHASER_API_URL/v1/jobs" \\
  -H "Authorization: Bearer $CHASER_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "kind": "sandbox.exec",
    "input": {"workspace": "my-project", "command": "npm test"}
  }' | jq
"""

JOBS_EPHEMERAL = """
curl -sS "$CHASER_API_URL/v1/jobs" \\
  -H "Authorization: Bearer $CHASER_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "kind": "sandbox.exec",
    "input": {"ephemeral": true, "image": "node:20", "command": "node -v"}
  }' | jq
"""

# A kind of the seeds' table this deployment does not offer.
JOBS_RUNNER = """
curl -sS "$CHASER_API_URL/v1/jobs" \\
  -H "Authorization: Bearer $CHASER_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "kind": "github.runner",
    "input": {"labels": ["chaser"]}
  }' | jq
"""

JOBS_SCHEDULED = """
curl -sS "$CHASER_API_URL/v1/jobs" \\
  -H "Authorization: Bearer $CHASER_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "kind": "sandbox.exec",
    "input": {"workspace": "my-project", "command": "npm test"},
    "run_at": "2025-03-15T10:00:00Z",
    "idempotency_key": "nightly-test-2025-03-15"
  }' | jq
"""

JOBS_MANAGE = """
# List jobs
curl -sS "$CHASER_API_URL/v1/jobs" \\
  -H "Authorization: Bearer $CHASER_API_KEY" | jq

# Get a specific job
curl -sS "$CHASER_API_URL/v1/jobs/$JOB_ID" \\
  -H "Authorization: Bearer $CHASER_API_KEY" | jq

# Cancel a job
curl -sS -X POST "$CHASER_API_URL/v1/jobs/$JOB_ID/cancel" \\
  -H "Authorization: Bearer $CHASER_API_KEY" | jq

# Retry a failed job
curl -sS -X POST "$CHASER_API_URL/v1/jobs/$JOB_ID/retry" \\
  -H "Authorization: Bearer $CHASER_API_KEY" | jq
"""


def one_json(done: subprocess.CompletedProcess[bytes]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


def json_documents(text: bytes) -> list[dict[str, object]]:
    decoder, docs, pos, raw = json.JSONDecoder(), [], 0, text.decode()
    while pos < len(raw):
        if raw[pos].isspace():
            pos += 1
            continue
        doc, pos = decoder.raw_decode(raw, pos)
        docs.append(doc)
    return docs


async def test_ci_single_command_job(system: System) -> None:
    job = one_json(await curl(system, CI_SINGLE_COMMAND))
    assert job["kind"] == "sandbox.exec" and job["status"] in ("queued", "running")
    done = await wait_for_job(system.client, str(job["id"]))
    # npm really ran in a fresh sandbox: there is no project there, so `npm ci` says so.
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "command_failed"
    assert done["result"]["exit_code"] != 0 and done["result"]["timed_out"] is False
    assert "package-lock.json" in done["output"]
    assert [a["number"] for a in done["attempts"]] == [1]
    session = (await system.client.get(f"/v1/sessions/{done['result']['session_id']}")).json()
    assert session["status"] == "terminated" and session["ephemeral"] is True
    assert system.containers() == set()


async def test_jobs_ephemeral_example(system: System) -> None:
    job = one_json(await curl(system, JOBS_EPHEMERAL))
    done = await wait_for_job(system.client, str(job["id"]))
    assert done["status"] == "succeeded", done
    assert done["result"]["exit_code"] == 0 and done["error"] is None
    # node:20 is only an alias of the default image here, whose node is Debian's 18
    assert done["output"].startswith("v18.")
    assert done["started_at"] >= done["created_at"] and done["finished_at"] >= done["started_at"]
    assert system.containers() == set()


async def test_workspace_examples_fail_clearly_without_the_workspace(system: System) -> None:
    for script, name in ((CI_PIPELINE, "ci-project"), (JOBS_CREATE, "my-project")):
        job = one_json(await curl(system, script))
        done = await wait_for_job(system.client, str(job["id"]))
        assert done["status"] == "failed"
        expected = {"code": "workspace_not_found", "message": f"workspace {name!r} not found", "status": 404}
        assert done["error"] == expected
        assert len(done["attempts"]) == 1  # a 404 is not retried
    assert (await system.client.get("/v1/sessions")).json()["sessions"] == []


async def test_unavailable_kind_is_refused(system: System) -> None:
    error = one_json(await curl(system, JOBS_RUNNER))["error"]
    assert isinstance(error, dict) and error["code"] == "unknown_kind"
    assert "'github.runner'" in error["message"] and "sandbox.exec" in error["message"]
    assert (await system.client.get("/v1/jobs")).json()["jobs"] == []


async def test_scheduling_and_idempotency_example(system: System) -> None:
    first = one_json(await curl(system, JOBS_SCHEDULED))
    again = one_json(await curl(system, JOBS_SCHEDULED))
    assert first["id"] == again["id"]
    assert first["idempotency_key"] == "nightly-test-2025-03-15"
    assert first["status"] == "queued"  # run_at in the past means now
    assert first["run_at"] == first["created_at"]
    different = JOBS_SCHEDULED.replace('"command": "npm test"', '"command": "npm run nightly"')
    conflict = one_json(await curl(system, different))["error"]
    assert isinstance(conflict, dict) and conflict["code"] == "idempotency_conflict"
    assert str(first["id"]) in str(conflict["message"])
    # Keys are per account: another account's same key makes its own job.
    other = await system.new_key("other@test.invalid")
    theirs = await system.client.post(
        "/v1/jobs",
        headers={"Authorization": f"Bearer {other}"},
        json={"kind": "session.bulk_terminate", "input": {"session_ids": [str(first["id"])]},
              "idempotency_key": "nightly-test-2025-03-15"},
    )  # fmt: skip
    assert theirs.status_code == 201 and theirs.json()["id"] != first["id"]
    await wait_for_job(system.client, str(first["id"]))


async def test_manage_examples(system: System) -> None:
    failing = (await system.client.post(
        "/v1/jobs", json={"kind": "sandbox.exec", "input": {"ephemeral": True, "command": "echo attempt; exit 4"}}
    )).json()  # fmt: skip
    await wait_for_job(system.client, failing["id"])
    done = await curl(system, JOBS_MANAGE.replace("$JOB_ID", failing["id"]))
    listed, got, cancel, retried = json_documents(done.stdout)
    assert [j["id"] for j in listed["jobs"]] == [failing["id"]] and listed["next_cursor"] is None
    assert got["status"] == "failed" and got["result"]["exit_code"] == 4 and got["output"] == "attempt\n"
    assert cancel["error"]["code"] == "job_finished"
    assert retried["status"] == "queued" and retried["attempt"] == 1
    again = await wait_for_job(system.client, failing["id"])
    assert again["status"] == "failed" and again["attempt"] == 2
    assert [(a["number"], a["status"], a["output"]) for a in again["attempts"]] == [
        (1, "failed", "attempt\n"),
        (2, "failed", "attempt\n"),
    ]
    assert system.containers() == set()


async def test_job_mutations_are_audited(system: System) -> None:
    client = system.client
    job = (
        await client.post(
            "/v1/jobs", json={"kind": "sandbox.exec", "input": {"ephemeral": True, "command": "sleep 30"}}
        )
    ).json()
    assert (await client.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 200
    await wait_for_job(client, job["id"])
    assert (await client.post(f"/v1/jobs/{job['id']}/retry")).status_code == 200
    assert (await client.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 200
    await wait_for_job(client, job["id"])
    events = (await client.get("/v1/audit", params={"limit": "100"})).json()["events"]
    done = {e["action"] for e in events if e["result"] == "success" and e["resource"]["type"] == "job"}
    assert {"job.create", "job.cancel", "job.retry"} <= done
    create = next(e for e in events if e["action"] == "job.create")
    assert create["resource"]["id"] == job["id"]
