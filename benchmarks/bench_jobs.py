"""Jobs through the queue, next to the one-shot ``POST /v1/exec`` path on the same host, in one run.

Starts a scheduler and an agent in this process (loopback only, a fresh
SQLite store under /tmp) and measures, over real HTTP:

- on an idle queue, one job at a time: enqueue→running (the job's
  ``created_at`` to its attempt's ``started_at``, read from the store) and
  enqueue→finished of an ephemeral ``sandbox.exec`` of ``true``, interleaved
  with one-shot ``POST /v1/exec {"ephemeral": true, "command": "true"}``;
- a drain: ``--jobs`` such jobs submitted at once, their enqueue→running
  (queueing included) and the throughput from the first submit to the last
  finish; then the same number of one-shot execs from ``--concurrency``
  clients at once (the worker runs that many jobs at once), and their
  throughput.

    python -m benchmarks.bench_jobs [--jobs 500] [--sequential 30] [--concurrency 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import trio

from agent.config import AgentConfig
from agent.main import serve as serve_agent
from benchmarks.bench_sessions import aligned, fail_on_sigterm, leftovers, percentile, remove_all
from benchmarks.system import IMAGES_DIR, LOOPBACK, PROXY_VARS, free_port, started_ahead
from scheduler.auth import new_secret
from scheduler.config import SchedulerConfig
from scheduler.main import serve as serve_scheduler
from scheduler.store import Store
from scheduler.store.schema import job_attempts, jobs

TRUE_JOB = {"kind": "sandbox.exec", "input": {"ephemeral": True, "image": "default", "command": "true"}}
ONE_SHOT = {"ephemeral": True, "image": "default", "command": "true"}
SUBMITTERS = 4

Samples = dict[str, list[float]]  # metric -> seconds


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any], expect: int) -> Any:
    response = await client.post(path, json=body)
    if response.status_code != expect:
        raise RuntimeError(f"POST {path} returned {response.status_code}: {response.text}")
    return response.json()


def job_times(store: Store, job_ids: list[str]) -> list[tuple[str, float, float, float]]:
    """(status, created_at, started_at, finished_at) of each job's first attempt, from the store."""
    query = (
        sa.select(jobs.c.status, jobs.c.created_at, job_attempts.c.started_at, job_attempts.c.finished_at)
        .join(job_attempts, (job_attempts.c.job_id == jobs.c.id) & (job_attempts.c.number == 1))
        .where(jobs.c.id.in_(job_ids))
    )
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def unfinished(store: Store, job_ids: list[str]) -> int:
    query = sa.select(sa.func.count()).where(
        jobs.c.id.in_(job_ids), jobs.c.status.not_in(["succeeded", "failed", "canceled"])
    )
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


async def wait_drained(store: Store, job_ids: list[str], timeout: float) -> None:
    with trio.fail_after(timeout):
        while await trio.to_thread.run_sync(unfinished, store, job_ids):
            await trio.sleep(0.05)


def record(samples: Samples, store: Store, job_ids: list[str], prefix: str) -> None:
    rows = job_times(store, job_ids)
    failed = [r for r in rows if r[0] != "succeeded"]
    if failed or len(rows) != len(job_ids):
        raise RuntimeError(f"{len(failed)} jobs did not succeed, {len(job_ids) - len(rows)} never ran")
    for _, created, started, finished in rows:
        samples[f"{prefix}_to_running"].append(started - created)
        samples[f"{prefix}_to_finished"].append(finished - created)


async def sequential(client: httpx.AsyncClient, store: Store, rounds: int, samples: Samples) -> None:
    """One job, then one one-shot exec, ``rounds`` times, each alone on the host."""
    for i in range(rounds):
        print(f"sequential {i + 1}/{rounds}", file=sys.stderr)
        job = await post(client, "/v1/jobs", TRUE_JOB, 201)
        await wait_drained(store, [job["id"]], timeout=120)
        record(samples, store, [job["id"]], "idle")
        started = time.perf_counter()
        result = await post(client, "/v1/exec", ONE_SHOT, 200)
        if result["exit_code"] != 0:
            raise RuntimeError(f"one-shot exec exited {result['exit_code']}")
        samples["oneshot"].append(time.perf_counter() - started)


async def drain(client: httpx.AsyncClient, store: Store, count: int, samples: Samples) -> float:
    """Submit ``count`` jobs at once; seconds from the first submit to the last finish."""
    print(f"draining {count} jobs", file=sys.stderr)
    job_ids: list[str] = []

    async def submitter(share: int) -> None:
        for _ in range(share):
            job_ids.append((await post(client, "/v1/jobs", TRUE_JOB, 201))["id"])

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(SUBMITTERS):
            nursery.start_soon(submitter, count // SUBMITTERS + (i < count % SUBMITTERS))
    await wait_drained(store, job_ids, timeout=60 + count * 5)
    wall = time.perf_counter() - started
    record(samples, store, job_ids, "drain")
    return wall


async def one_shots(client: httpx.AsyncClient, count: int, concurrency: int, samples: Samples) -> float:
    """``count`` one-shot execs from ``concurrency`` clients at once; their wall time."""
    print(f"{count} one-shot execs, {concurrency} at a time", file=sys.stderr)
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t = time.perf_counter()
            result = await post(client, "/v1/exec", ONE_SHOT, 200)
            if result["exit_code"] != 0:
                raise RuntimeError(f"one-shot exec exited {result['exit_code']}")
            samples["oneshot_loaded"].append(time.perf_counter() - t)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.perf_counter() - started


async def run(count: int, rounds: int, concurrency: int) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix="chaser-bench-jobs-"))
    state_dir.chmod(0o711)  # containers' root (an unprivileged uid) passes through
    lxc_path = state_dir / "agent" / "lxc"
    samples: Samples = defaultdict(list)
    token, api_key = secrets.token_urlsafe(32), new_secret()
    scheduler_config = SchedulerConfig.load(
        None,
        bind=f"{LOOPBACK}:{free_port()}",
        database_url=f"sqlite:///{state_dir / 'chaser.db'}",
        token=token,
        bootstrap_api_key=api_key,
        rate_limits={"enabled": False},  # the hot paths, not the limiter's 429s
        job_concurrency=concurrency,
        job_account_concurrency=concurrency,
    )
    store = Store(scheduler_config.database_url)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(fail_on_sigterm)
            url: str = await nursery.start(serve_scheduler, scheduler_config)
            agent_config = AgentConfig.load(
                None,
                host_id="bench",
                bind=f"{LOOPBACK}:0",
                state_dir=state_dir / "agent",
                images_dir=IMAGES_DIR,
                scheduler_url=url,
                token=token,
                destroy_on_shutdown=True,
            )
            await nursery.start(serve_agent, agent_config)
            headers = {"Authorization": f"Bearer {api_key}"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, trust_env=False) as client:
                await sequential(client, store, 1, defaultdict(list))  # warm-up, not counted
                await sequential(client, store, rounds, samples)
                drain_wall = await drain(client, store, count, samples)
                oneshot_wall = await one_shots(client, count, concurrency, samples)
            leaked = sorted(set(leftovers(lxc_path)) - started_ahead(lxc_path))  # the warm pool's are no leak
            nursery.cancel_scope.cancel()
    finally:
        store.close()
        with trio.CancelScope(shield=True):
            await remove_all(lxc_path)
        if leftovers(lxc_path):
            raise RuntimeError(f"could not remove containers in {lxc_path}")
        shutil.rmtree(state_dir)
    return summarize(samples, count, rounds, concurrency, drain_wall, oneshot_wall, leaked)


def summarize(
    samples: Samples,
    count: int,
    rounds: int,
    concurrency: int,
    drain_wall: float,
    oneshot_wall: float,
    leaked: list[str],
) -> dict[str, Any]:
    labels = {
        "idle_to_running": "job enqueue→running, idle queue",
        "idle_to_finished": "job enqueue→finished, idle queue",
        "oneshot": "one-shot POST /v1/exec, alone",
        "drain_to_running": f"job enqueue→running, {count} queued at once",
        "drain_to_finished": f"job enqueue→finished, {count} queued at once",
        "oneshot_loaded": f"one-shot POST /v1/exec, {concurrency} at once",
    }
    rows = [
        {
            "path": label,
            "n": len(samples[metric]),
            "p50_ms": round(percentile(samples[metric], 0.5) * 1000, 2),
            "p95_ms": round(percentile(samples[metric], 0.95) * 1000, 2),
        }
        for metric, label in labels.items()
    ]
    return {
        "jobs": count,
        "sequential": rounds,
        "concurrency": concurrency,
        "rows": rows,
        "throughput": {
            "jobs_per_s": round(count / drain_wall, 2),
            "jobs_wall_s": round(drain_wall, 2),
            "oneshot_per_s": round(count / oneshot_wall, 2),
            "oneshot_wall_s": round(oneshot_wall, 2),
        },
        "leaked": leaked,
    }


def table(summary: dict[str, Any]) -> str:
    lines = [("path", "n", "p50 ms", "p95 ms")] + [
        (r["path"], str(r["n"]), f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}") for r in summary["rows"]
    ]
    text = aligned(lines, left=(0,))
    t = summary["throughput"]
    text.append("")
    text.append(f"drain {summary['jobs']} sandbox.exec jobs:  {t['jobs_per_s']:.1f} jobs/s ({t['jobs_wall_s']:.1f} s)")
    text.append(
        f"{summary['jobs']} one-shot /v1/exec ({summary['concurrency']} at once):  "
        f"{t['oneshot_per_s']:.1f} execs/s ({t['oneshot_wall_s']:.1f} s)"
    )
    text.append(f"left behind: {', '.join(summary['leaked']) or 'none'}")
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs drained at once (default 500)")
    parser.add_argument("--sequential", type=int, default=30, help="jobs timed alone (default 30)")
    parser.add_argument("--concurrency", type=int, default=8, help="jobs run at once (default 8)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.sequential < 1 or args.concurrency < 1:
        parser.error("--jobs, --sequential and --concurrency must be at least 1")
    for var in PROXY_VARS:
        os.environ.pop(var, None)
    summary = trio.run(run, args.jobs, args.sequential, args.concurrency)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else table(summary))
    return 1 if summary["leaked"] else 0


if __name__ == "__main__":
    sys.exit(main())
