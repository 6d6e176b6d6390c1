"""Workspace-backed job kinds on real workspaces: pipeline.run, workspace.delete, workspace.bulk_delete."""

from __future__ import annotations

from tests.conftest import System
from tests.jobs_support import submit, wait_for_job
from tests.workspace_support import ok


async def test_pipeline_steps_share_the_workspace_and_stop_at_the_first_failure(ws_system: System) -> None:
    client = ws_system.client
    ok(await client.post("/v1/workspaces", json={"name": "ci-project"}), 201)
    steps = [
        {"command": "echo built > artifact.txt", "timeout_ms": 60000},
        {"command": "cat artifact.txt && exit 4", "timeout_ms": 60000},
        {"command": "echo never > never.txt", "timeout_ms": 60000},
    ]
    job = await submit(client, "pipeline.run", {"workspace": "ci-project", "steps": steps})
    done = await wait_for_job(client, job["id"])
    assert done["status"] == "failed", done
    check = ok(await client.post("/v1/exec", json={"workspace": "ci-project", "command": "ls"}))
    assert check["output"].split() == ["artifact.txt"]  # step 1 persisted, step 3 never ran


async def test_workspace_delete_jobs_keep_the_conflict_rule(ws_system: System) -> None:
    client = ws_system.client
    for name in ("busy", "idle-a", "idle-b"):
        ok(await client.post("/v1/workspaces", json={"name": name}), 201)
    session = ok(await client.post("/v1/sessions", json={"workspace": "busy"}), 201)

    refused = await wait_for_job(client, (await submit(client, "workspace.delete", {"workspace": "busy"}))["id"])
    assert refused["status"] == "failed"
    assert (await client.get("/v1/workspaces/busy")).status_code == 200

    bulk = await submit(client, "workspace.bulk_delete", {"workspaces": ["idle-a", "idle-b", "nope"]})
    bulk_done = await wait_for_job(client, bulk["id"])
    assert bulk_done["status"] == "failed"  # one unknown selector: partial failure, reported per item
    for name in ("idle-a", "idle-b"):
        assert (await client.get(f"/v1/workspaces/{name}")).status_code == 404

    forced = await submit(client, "workspace.delete", {"workspace": "busy", "force": True})
    assert (await wait_for_job(client, forced["id"]))["status"] == "succeeded"
    assert (await client.get("/v1/workspaces/busy")).status_code == 404
    assert ok(await client.get(f"/v1/sessions/{session['id']}"))["status"] == "terminated"
