"""The queue across replicas and accounts: each job runs once, no account exceeds its limit or starves others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import trio

from scheduler.main import serve as serve_scheduler
from scheduler.store import Store
from scheduler.store.schema import job_attempts
from tests.conftest import Server, _postgres_database, scheduler_config, start_system, stop_system
from tests.jobs_support import submit, wait_for_job


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_database()


def _attempts(database_url: str) -> list[dict[str, Any]]:
    store = Store(database_url)
    try:
        with store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(job_attempts)).mappings()]
    finally:
        store.close()


async def test_two_schedulers_drain_one_queue_each_job_once(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, postgres_url: str
) -> None:
    # Room for 8 at once across the two, but the account may have only 3 running.
    overrides = {"job_concurrency": 4, "job_account_concurrency": 3, "job_poll_interval": 0.2}
    system = await start_system(nursery, tmp_path, images_dir, postgres_url, scheduler_overrides=overrides)
    second = Server(serve_scheduler, scheduler_config(postgres_url, system.token, system.api_key, **overrides))
    other_url = await second.start(nursery)
    headers = {"Authorization": f"Bearer {system.api_key}"}
    try:
        async with httpx.AsyncClient(base_url=other_url, headers=headers, timeout=60) as other:
            kept = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
            jobs = []
            for i in range(30):  # submitted to both, so each replica is woken by its own
                client = system.client if i % 2 else other
                command = f"echo {i} >> /root/log; sleep 0.2"
                jobs.append(await submit(client, "sandbox.exec", {"session_id": kept["id"], "command": command}))
            for i in range(6):
                client = other if i % 2 else system.client
                jobs.append(await submit(client, "sandbox.exec", {"ephemeral": True, "command": f"echo e{i}"}))
            done = [await wait_for_job(system.client, job["id"], timeout=120) for job in jobs]

        assert all(job["status"] == "succeeded" and job["attempt"] == 1 for job in done), done
        assert all(len(job["attempts"]) == 1 for job in done)
        assert [job["output"] for job in done[30:]] == [f"e{i}\n" for i in range(6)]
        # The side effects: every counted job wrote its line once...
        log = (await system.client.post("/v1/exec", json={"session_id": kept["id"], "command": "cat /root/log"})).json()
        assert sorted(int(line) for line in log["output"].split()) == list(range(30))
        # ...and every ephemeral job made one session, no more.
        sessions = (await system.client.get("/v1/sessions", params={"limit": 200})).json()["sessions"]
        made = {job["result"]["session_id"] for job in done[30:]}
        assert len(made) == 6 and {s["id"] for s in sessions} == made | {kept["id"]}
        # Both replicas ran jobs, and no job has a second attempt anywhere.
        attempts = await trio.to_thread.run_sync(_attempts, postgres_url)
        assert len(attempts) == 36 and {a["number"] for a in attempts} == {1}
        assert len({a["worker_id"] for a in attempts}) == 2
        assert _most_at_once([(a["started_at"], a["finished_at"]) for a in attempts]) <= 3
        await system.client.delete(f"/v1/sessions/{kept['id']}")
    finally:
        await second.stop()
        await stop_system(system)


# A worker reads the clock before its transaction: a finish stamped t may
# commit (and free its slot) after a claim stamped a little earlier commits.
_STAMP_SKEW = 0.05


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at once, each end taken ``_STAMP_SKEW`` early (a job runs 0.2 s or more)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end - _STAMP_SKEW, -1) for _, end in intervals])
    most = current = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start
        current += change
        most = max(most, current)
    return most


async def test_account_limit_and_fairness(nursery: trio.Nursery, tmp_path: Path, images_dir: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'db'}"
    overrides = {"job_concurrency": 3, "job_account_concurrency": 2, "job_poll_interval": 0.2}
    system = await start_system(nursery, tmp_path, images_dir, database_url, scheduler_overrides=overrides)
    try:
        other = {"Authorization": f"Bearer {await system.new_key('other@test.invalid')}"}
        mine = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
        theirs = (await system.client.post("/v1/sessions", json={"ephemeral": True}, headers=other)).json()
        flood = [
            await submit(system.client, "sandbox.exec", {"session_id": mine["id"], "command": "sleep 0.5"})
            for _ in range(8)
        ]
        await wait_for_job(system.client, flood[1]["id"], statuses=("running",))
        body = {"kind": "sandbox.exec", "input": {"session_id": theirs["id"], "command": "true"}}
        late = (await system.client.post("/v1/jobs", headers=other, json=body)).json()
        late_done = await wait_for_job(system.client, late["id"], headers=other)
        flood_done = [await wait_for_job(system.client, job["id"]) for job in flood]
        assert late_done["status"] == "succeeded" and all(j["status"] == "succeeded" for j in flood_done)

        by_job = {a["job_id"]: a for a in await trio.to_thread.run_sync(_attempts, database_url)}
        floods = sorted((by_job[j["id"]]["started_at"], by_job[j["id"]]["finished_at"]) for j in flood)
        assert _most_at_once(floods) == 2  # the account's limit, reached and never passed
        # The other account's one job did not wait behind the flood: it started
        # before the flood's third job, although submitted after all eight.
        assert by_job[late["id"]]["started_at"] < floods[2][0]
        everyone = [*floods, (by_job[late["id"]]["started_at"], by_job[late["id"]]["finished_at"])]
        assert _most_at_once(everyone) <= 3
        for session, auth in ((mine, None), (theirs, other)):
            await system.client.delete(f"/v1/sessions/{session['id']}", headers=auth)
    finally:
        await stop_system(system)
