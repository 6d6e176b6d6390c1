"""Jobs survive their scheduler: found on restart, re-attached or queued again, never lost, never run twice.

Side effects prove "once": jobs append to a file in a session that outlives
them, and the file is read afterwards.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from agent.main import serve as serve_agent
from scheduler.auth import new_secret
from scheduler.jobs.store import JobStore
from scheduler.store import Store
from tests.conftest import Server, agent_config, start_system, stop_system, wait_until
from tests.jobs_support import submit, wait_for_job, wait_for_output
from tests.test_cli import free_port

SCHEDULER = str(Path(sys.executable).parent / "chaser-scheduler")
COUNTED = "echo run >> /root/count; echo started; sleep {seconds}; echo done"


async def _count(client: httpx.AsyncClient, session_id: str) -> str:
    ran = await client.post("/v1/exec", json={"session_id": session_id, "command": "cat /root/count"})
    return str(ran.json()["output"])


def _reattached_once(job: dict[str, Any]) -> None:
    assert job["status"] == "succeeded", job
    [attempt] = job["attempts"]
    assert attempt["reattached"] == 1 and attempt["status"] == "succeeded"
    assert job["output"] == "started\ndone\n"


async def test_scheduler_restart_reattaches_running_jobs(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, database_url: str
) -> None:
    system = await start_system(
        nursery, tmp_path, images_dir, database_url,
        scheduler_overrides={"bind": f"127.0.0.1:{free_port()}", "job_poll_interval": 0.2},
    )  # fmt: skip
    try:
        kept = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
        counted = await submit(
            system.client, "sandbox.exec", {"session_id": kept["id"], "command": COUNTED.format(seconds=3)}
        )
        ephemeral = await submit(
            system.client, "sandbox.exec", {"ephemeral": True, "command": "echo started; sleep 3; echo done"}
        )
        for job in (counted, ephemeral):
            await wait_for_output(system.client, job["id"], "started\n")

        await system.scheduler.stop()
        await system.scheduler.start(nursery)  # same port: the agent's heartbeats find it again

        for job in (counted, ephemeral):
            _reattached_once(await wait_for_job(system.client, job["id"]))
        assert await _count(system.client, kept["id"]) == "run\n"
        done = await wait_for_job(system.client, ephemeral["id"])
        session = (await system.client.get(f"/v1/sessions/{done['result']['session_id']}")).json()
        assert session["status"] == "terminated" and session["status_reason"] == "its job ended"
        await system.client.delete(f"/v1/sessions/{kept['id']}")
        assert system.containers() == set()
    finally:
        await stop_system(system)


async def test_worker_dying_before_the_start_is_retried(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, database_url: str
) -> None:
    """A worker claimed the job and made its session, then died: the session goes, the job runs once."""
    system = await start_system(
        nursery, tmp_path, images_dir, database_url, scheduler_overrides={"bind": f"127.0.0.1:{free_port()}"}
    )
    try:
        made = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
        later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        job = await submit(system.client, "sandbox.exec", {"ephemeral": True, "command": "echo ran"}, run_at=later)
        await system.scheduler.stop()

        def die_after_claiming() -> None:
            store = system.store()
            try:
                jobs = JobStore(store)
                now = time.time()
                assert jobs.transition(job["id"], "scheduled", status="queued", run_at=now, queued_at=now)
                claimed = jobs.claim("dead-worker", now, now - 1, account_limit=8)
                assert claimed is not None and claimed[0]["id"] == job["id"]
                checkpoint = {"session_id": made["id"], "owned": True}
                assert jobs.save_attempt(job["id"], 1, "dead-worker", checkpoint=checkpoint)
            finally:
                store.close()

        await trio.to_thread.run_sync(die_after_claiming)
        await system.scheduler.start(nursery)

        done = await wait_for_job(system.client, job["id"])
        assert done["status"] == "succeeded" and done["output"] == "ran\n"
        first, second = done["attempts"]
        assert first["status"] == "failed" and first["reattached"] == 1
        assert first["error"] == {
            "code": "interrupted",
            "message": "the scheduler stopped before the job started; queued again",
        }
        assert second["status"] == "succeeded" and second["result"]["session_id"] != made["id"]
        # The dead worker's session was ended by the one that took over.
        abandoned = (await system.client.get(f"/v1/sessions/{made['id']}")).json()
        assert abandoned["status"] == "terminated" and abandoned["status_reason"] == "its job ended"
        assert system.containers() == set()
    finally:
        await stop_system(system)


async def test_killed_scheduler_process_loses_no_job(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, database_url: str
) -> None:
    """SIGKILL a real ``chaser-scheduler``; a new one takes its jobs over once their leases lapse."""
    port, token, api_key = free_port(), secrets.token_urlsafe(32), new_secret()
    config = tmp_path / "scheduler.toml"
    config.write_text(
        f'bind = "127.0.0.1:{port}"\ndatabase_url = "{database_url}"\ntoken = "{token}"\n'
        f'bootstrap_api_key = "{api_key}"\nbootstrap_email = "owner@test.invalid"\n'
        "heartbeat_timeout = 1.0\nreconcile_interval = 0.2\njob_lease_timeout = 3.0\njob_poll_interval = 0.2\n"
    )
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "scheduler.log").open("ab")

    async def start_scheduler() -> trio.Process:
        process = await trio.lowlevel.open_process(
            [SCHEDULER, "--config", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )

        async def healthy() -> bool:
            try:
                return (await client.get("/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(healthy, timeout=60)
        return process

    agent = Server(serve_agent, agent_config(tmp_path / "agent", images_dir, url, token))
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as client:
        scheduler = await start_scheduler()
        try:
            await agent.start(nursery)
            kept = (await client.post("/v1/sessions", json={"ephemeral": True})).json()
            counted = await submit(
                client, "sandbox.exec", {"session_id": kept["id"], "command": COUNTED.format(seconds=5)}
            )
            ephemeral = await submit(
                client, "sandbox.exec", {"ephemeral": True, "command": "echo started; sleep 5; echo done"}
            )
            for job in (counted, ephemeral):
                await wait_for_output(client, job["id"], "started\n")

            scheduler.kill()
            await scheduler.wait()

            # Stay down past the silent-host threshold, as a real outage would:
            # the restarted scheduler must not take its hosts for dead.
            store = Store(database_url)
            try:

                async def host_looks_silent() -> bool:
                    hosts = await store.run(store.hosts_with_load)
                    return bool(hosts) and hosts[0]["last_heartbeat"] < time.time() - 2.0

                await wait_until(host_looks_silent, timeout=20)
            finally:
                store.close()

            scheduler = await start_scheduler()
            for job in (counted, ephemeral):
                _reattached_once(await wait_for_job(client, job["id"], timeout=60))
            assert await _count(client, kept["id"]) == "run\n"
            assert (await client.get(f"/v1/sessions/{kept['id']}")).json()["status"] == "running"
            await client.delete(f"/v1/sessions/{kept['id']}")
        finally:
            scheduler.terminate()
            with trio.move_on_after(30):
                await scheduler.wait()
            scheduler.kill()
            await agent.stop()
            log.close()
    lxc_path = tmp_path / "agent" / "lxc"
    assert not lxc_path.exists() or list(lxc_path.iterdir()) == []
