"""Helpers for the jobs tests: waiting on jobs through the public API."""

from __future__ import annotations

from typing import Any

import httpx
import trio

TERMINAL = ("succeeded", "failed", "canceled")


async def wait_for_job(
    client: httpx.AsyncClient,
    job_id: str,
    statuses: tuple[str, ...] = TERMINAL,
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll the job until its status is one of ``statuses``; fail the test at ``timeout``."""
    with trio.fail_after(timeout):
        while True:
            job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
            if job["status"] in statuses:
                return job
            await trio.sleep(0.05)


async def submit(client: httpx.AsyncClient, kind: str, job_input: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json={"kind": kind, "input": job_input, **extra})
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def wait_for_output(client: httpx.AsyncClient, job_id: str, output: str, timeout: float = 30.0) -> None:
    """Wait until the running job's output so far is ``output``."""
    with trio.fail_after(timeout):
        while (await client.get(f"/v1/jobs/{job_id}")).json()["output"] != output:
            await trio.sleep(0.05)
