"""A job's life: scheduled, running with its output readable, canceled for real, timed out, capped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import System, wait_until
from tests.jobs_support import submit, wait_for_job


async def test_output_is_readable_while_running_and_cancel_kills(system: System) -> None:
    job = await submit(
        system.client, "sandbox.exec", {"ephemeral": True, "command": "echo started; sleep 300; echo never"}
    )

    async def started() -> bool:
        current = (await system.client.get(f"/v1/jobs/{job['id']}")).json()
        return current["status"] == "running" and current["output"] == "started\n"

    await wait_until(started, timeout=30)
    running = (await system.client.get(f"/v1/jobs/{job['id']}")).json()
    assert running["result"] is None and running["attempts"][0]["result"] is None  # none until it ends
    [session] = (await system.client.get("/v1/sessions", params={"status": "running"})).json()["sessions"]
    assert session["id"] in system.containers()

    canceled = await system.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    body = canceled.json()
    assert body["status"] == "canceled" and body["cancel_requested_at"] is not None
    assert body["error"] == {"code": "canceled", "message": "canceled by request"}
    [attempt] = body["attempts"]
    assert attempt["status"] == "canceled"
    assert attempt["output"] == "started\n"  # the command was killed before "never"
    assert attempt["result"]["exit_code"] == 137 and attempt["result"]["session_id"] == session["id"]
    ended = (await system.client.get(f"/v1/sessions/{session['id']}")).json()
    assert ended["status"] == "terminated" and ended["status_reason"] == "its job was canceled"
    assert system.containers() == set()

    again = await system.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


async def test_cancel_kills_the_process_group_in_a_kept_session(sqlite_system: System) -> None:
    system = sqlite_system
    session = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
    job = await submit(
        system.client, "sandbox.exec", {"session_id": session["id"], "command": "echo go; sleep 300 | cat"}
    )

    async def started() -> bool:
        return (await system.client.get(f"/v1/jobs/{job['id']}")).json()["output"] == "go\n"

    await wait_until(started, timeout=30)
    retry = await system.client.post(f"/v1/jobs/{job['id']}/retry")
    assert retry.status_code == 409 and retry.json()["error"]["code"] == "job_not_finished"
    assert (await system.client.post(f"/v1/jobs/{job['id']}/cancel")).json()["status"] == "canceled"
    ps = await system.client.post("/v1/exec", json={"session_id": session["id"], "command": "ps -eo args="})
    assert "sleep 300" not in ps.json()["output"] and " cat" not in ps.json()["output"]
    # The session was the caller's: the job used it and left it running.
    assert (await system.client.get(f"/v1/sessions/{session['id']}")).json()["status"] == "running"

    retried = await system.client.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    await wait_until(started, timeout=30)
    assert (await system.client.post(f"/v1/jobs/{job['id']}/cancel")).json()["status"] == "canceled"
    final = (await system.client.get(f"/v1/jobs/{job['id']}")).json()
    assert [a["status"] for a in final["attempts"]] == ["canceled", "canceled"]
    await system.client.delete(f"/v1/sessions/{session['id']}")


async def test_scheduled_job_waits_for_its_time(system: System) -> None:
    run_at = datetime.now(UTC) + timedelta(seconds=3)
    stamp = run_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    job = await submit(system.client, "sandbox.exec", {"ephemeral": True, "command": "date +%s"}, run_at=stamp)
    assert job["status"] == "scheduled" and job["run_at"] == stamp and job["queued_at"] is None
    done = await wait_for_job(system.client, job["id"], timeout=60)
    assert done["status"] == "succeeded"
    assert done["started_at"] >= stamp and done["queued_at"] == stamp
    assert int(done["output"]) >= int(run_at.timestamp())


async def test_waiting_jobs_cancel_at_once_and_never_run(system: System) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job = await submit(system.client, "sandbox.exec", {"ephemeral": True, "command": "true"}, run_at=later)
    canceled = (await system.client.post(f"/v1/jobs/{job['id']}/cancel")).json()
    assert canceled["status"] == "canceled" and canceled["attempts"] == [] and canceled["finished_at"] is not None
    retried = (await system.client.post(f"/v1/jobs/{job['id']}/retry")).json()
    assert retried["status"] == "queued"  # a retry runs now, whatever run_at said
    done = await wait_for_job(system.client, job["id"])
    assert done["status"] == "succeeded" and len(done["attempts"]) == 1


async def test_command_timeout_and_output_cap(sqlite_system: System) -> None:
    system = sqlite_system
    slow = await submit(
        system.client, "sandbox.exec", {"ephemeral": True, "command": "echo x; sleep 60", "timeout_ms": 500}
    )
    chatty = await submit(system.client, "sandbox.exec", {"ephemeral": True, "command": "seq 1 400000; echo THE-END"})
    done = await wait_for_job(system.client, slow["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "command_timed_out"
    assert done["result"]["timed_out"] is True and done["result"]["exit_code"] == 137 and done["output"] == "x\n"
    done = await wait_for_job(system.client, chatty["id"])
    assert done["status"] == "succeeded"
    assert done["output_truncated"] is True and done["output"].endswith("400000\nTHE-END\n")
    assert len(done["output"]) <= 1 << 20
    assert system.containers() == set()


async def test_list_filters_and_pages(sqlite_system: System) -> None:
    system = sqlite_system
    ids = []
    for code in (0, 1, 0):
        job = await submit(system.client, "sandbox.exec", {"ephemeral": True, "command": f"exit {code}"})
        ids.append(job["id"])
    for job_id in ids:
        await wait_for_job(system.client, job_id)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    # Never runs: canceled below.
    sweep = await submit(system.client, "session.bulk_terminate", {"session_ids": [ids[0]]}, run_at=later)
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await system.client.get("/v1/jobs", params=params)).json()
        assert all("output" not in j and "attempts" not in j for j in page["jobs"])
        seen += [j["id"] for j in page["jobs"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == [sweep["id"], *reversed(ids)]
    failed = (await system.client.get("/v1/jobs", params={"status": "failed"})).json()["jobs"]
    assert [j["id"] for j in failed] == [ids[1]]
    execs = (await system.client.get("/v1/jobs", params={"kind": "sandbox.exec", "status": "succeeded"})).json()
    assert [j["id"] for j in execs["jobs"]] == [ids[2], ids[0]]
    scheduled = (await system.client.get("/v1/jobs", params={"status": "scheduled"})).json()["jobs"]
    assert [j["id"] for j in scheduled] == [sweep["id"]]
    await system.client.post(f"/v1/jobs/{sweep['id']}/cancel")
