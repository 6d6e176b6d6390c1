"""The kinds beyond a single command: pipelines, session termination, and the catalogue."""

from __future__ import annotations

import uuid

from pydantic import ValidationError

from scheduler.jobs.kind import registered
from tests.conftest import System
from tests.jobs_support import submit, wait_for_job, wait_for_output


async def test_pipeline_steps_share_a_filesystem_and_stop_at_the_first_failure(sqlite_system: System) -> None:
    system = sqlite_system
    steps = [
        {"command": "mkdir -p /root/app && cd /root/app && echo built > out.txt", "timeout_ms": 60000},
        {"command": "cat /root/app/out.txt", "cwd": "/root/app"},
        {"command": "echo $STAGE; exit 5", "env": {"STAGE": "lint"}},
        {"command": "echo never"},
    ]
    job = await submit(system.client, "pipeline.run", {"ephemeral": True, "image": "default", "steps": steps})
    done = await wait_for_job(system.client, job["id"])
    assert done["status"] == "failed"
    assert done["error"] == {"code": "step_failed", "message": "step 3 of 4 exited with code 5"}
    result = done["result"]
    assert result["failed_step"] == 2 and result["exit_code"] == 5
    assert [s["status"] for s in result["steps"]] == ["succeeded", "succeeded", "failed", "skipped"]
    assert [s.get("output") for s in result["steps"]] == ["", "built\n", "lint\n", None]
    assert result["steps"][3] == {"command": "echo never", "status": "skipped"}
    assert done["output"] == "lint\n"  # the job's output is its last step's
    session = (await system.client.get(f"/v1/sessions/{result['session_id']}")).json()
    assert session["status"] == "terminated"
    assert system.containers() == set()


async def test_pipeline_step_timeout_and_cancel(sqlite_system: System) -> None:
    system = sqlite_system
    timed = await submit(
        system.client,
        "pipeline.run",
        {
            "ephemeral": True,
            "env": {"A": "1"},
            "steps": [{"command": "echo $A"}, {"command": "sleep 30", "timeout_ms": 300}],
        },
    )
    done = await wait_for_job(system.client, timed["id"])
    assert done["error"]["message"] == "step 2 of 2 timed out"
    assert done["result"]["steps"][0]["output"] == "1\n" and done["result"]["steps"][1]["timed_out"] is True

    long = await submit(
        system.client,
        "pipeline.run",
        {
            "ephemeral": True,
            "steps": [{"command": "true"}, {"command": "echo waiting; sleep 300"}, {"command": "true"}],
        },
    )
    await wait_for_output(system.client, long["id"], "waiting\n")  # the second step runs
    canceled = (await system.client.post(f"/v1/jobs/{long['id']}/cancel")).json()
    assert canceled["status"] == "canceled"
    steps = canceled["attempts"][0]["result"]["steps"]
    assert [s["status"] for s in steps] == ["succeeded", "canceled", "skipped"]
    assert steps[1]["output"] == "waiting\n" and steps[1]["exit_code"] == 137
    assert system.containers() == set()


async def test_session_terminate_kinds(sqlite_system: System) -> None:
    system = sqlite_system
    a, b = [(await system.client.post("/v1/sessions", json={"ephemeral": True})).json() for _ in range(2)]
    job = await submit(system.client, "session.terminate", {"session_id": a["id"]})
    done = await wait_for_job(system.client, job["id"])
    assert done["status"] == "succeeded" and done["result"] == {"session_id": a["id"], "status": "terminated"}
    reason = (await system.client.get(f"/v1/sessions/{a['id']}")).json()["status_reason"]
    assert reason == f"terminated by job {job['id']}"

    missing = str(uuid.uuid4())
    bulk = await submit(system.client, "session.bulk_terminate", {"session_ids": [b["id"], a["id"], missing]})
    done = await wait_for_job(system.client, bulk["id"])
    assert done["status"] == "failed"
    assert done["error"] == {"code": "partial_failure", "message": "1 of 3 sessions could not be processed"}
    assert done["result"]["succeeded"] == 2 and done["result"]["failed"] == 1
    assert done["result"]["results"][:2] == [
        {"session_id": b["id"], "status": "terminated"},
        {"session_id": a["id"], "status": "terminated"},  # already was: fine
    ]
    assert done["result"]["results"][2]["error"]["code"] == "session_not_found"
    assert system.containers() == set()

    # Another account's session is not found by this account's jobs.
    theirs = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
    other = await system.new_key("other@test.invalid")
    as_other = {"Authorization": f"Bearer {other}"}
    job = (await system.client.post(
        "/v1/jobs", headers=as_other, json={"kind": "session.terminate", "input": {"session_id": theirs["id"]}}
    )).json()  # fmt: skip
    done = await wait_for_job(system.client, job["id"], headers=as_other)
    assert done["status"] == "failed" and done["error"]["code"] == "session_not_found"
    assert (await system.client.get(f"/v1/sessions/{theirs['id']}")).json()["status"] == "running"
    await system.client.delete(f"/v1/sessions/{theirs['id']}")


async def test_kinds_catalogue_is_generated_from_the_input_models(system: System) -> None:
    response = await system.client.get("/v1/jobs/kinds")
    assert response.status_code == 200
    kinds = {k["kind"]: k for k in response.json()["kinds"]}
    assert set(kinds) == {
        "sandbox.exec",
        "pipeline.run",
        "session.terminate",
        "session.bulk_terminate",
        "workspace.delete",
        "workspace.bulk_delete",
        "browser.action",
        "browser.scrape",
    }
    assert kinds["workspace.delete"]["scope"] == "workspaces.write"
    assert kinds["sandbox.exec"]["scope"] == "exec.write" and kinds["session.terminate"]["scope"] == "sessions.write"
    for name, entry in kinds.items():
        kind = registered()[name]
        assert entry["input_schema"] == kind.input_model.model_json_schema()
        assert entry["description"]
    pipeline = kinds["pipeline.run"]["input_schema"]
    assert pipeline["required"] == ["steps"]
    assert set(pipeline["properties"]) == {"workspace", "ephemeral", "image", "env", "steps"}
    assert set(kinds["sandbox.exec"]["input_schema"]["properties"]) >= {"command", "ephemeral", "image", "workspace"}
    # What the schema says is what validation does.
    try:
        registered()["pipeline.run"].parse({"ephemeral": True, "steps": []})
    except ValidationError as exc:
        assert exc.errors()[0]["loc"] == ("steps",)
    else:
        raise AssertionError("an empty pipeline validated")
