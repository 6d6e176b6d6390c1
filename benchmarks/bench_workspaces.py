"""Snapshot and clone of a workspace holding 1 GiB, on a reflink pool and on a plain one.

Runs scheduler and agent in this process (loopback only) twice: once with
the agent's storage pool on XFS made with ``reflink=1``, once on ext4, where
the agent falls back to sparse copies. Both pools are loop files in one
temporary directory, so they sit on the same device. In each, a workspace
gets 1 GiB of random data; then each round times, over real HTTP, a
snapshot (``POST /v1/workspaces/{w}/snapshots``) and a clone of the
template (``POST /v1/workspaces/{w}/clone``), and in the same round the raw
copy of the disk file that each amounts to: ``cp --reflink=always`` on XFS,
``cp --sparse=always`` on ext4.

    python -m benchmarks.bench_workspaces --rounds 10 [--data-mib 1024] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from agent.config import AgentConfig
from agent.main import serve as serve_agent
from agent.storage import mounts
from benchmarks.bench_sessions import aligned, fail_on_sigterm, percentile
from benchmarks.system import IMAGES_DIR, LOOPBACK, PROXY_VARS
from scheduler.auth import new_secret
from scheduler.config import SchedulerConfig
from scheduler.main import serve as serve_scheduler

POOL_SIZE = "8G"
DISK_GB = 2
MKFS = {"xfs": ["mkfs.xfs", "-q", "-m", "reflink=1"], "ext4": ["mkfs.ext4", "-q", "-F"]}
RAW_COPY = {
    "xfs": ("cp --reflink=always", ["cp", "--reflink=always"]),
    "ext4": ("cp --sparse=always", ["cp", "--sparse=always"]),
}

Samples = dict[str, list[float]]


@dataclass(frozen=True)
class Row:
    label: str
    metric: str
    baseline_label: str
    baseline_metric: str


def rows() -> list[Row]:
    out = []
    for fs, pool in (("xfs", "XFS reflink pool"), ("ext4", "ext4 pool, sparse copy")):
        for op in ("snapshot", "clone"):
            out.append(Row(f"{op}, {pool}", f"{fs}_{op}", RAW_COPY[fs][0], f"{fs}_raw"))
    return out


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=120)


@contextmanager
def loop_pool(parent: Path, fs: str) -> Any:
    """A fresh ``fs`` on a sparse loop file, mounted at ``parent/<fs>``; gone afterwards."""
    image, mount = parent / f"{fs}.img", parent / fs
    _run("truncate", "-s", POOL_SIZE, str(image))
    try:
        _run(*MKFS[fs], str(image))
        mount.mkdir()
        _run("mount", "-o", "loop", str(image), str(mount))
        try:
            yield mount
        finally:
            _run("umount", str(mount))
    finally:
        image.unlink()


async def api(client: httpx.AsyncClient, method: str, path: str, expect: int, body: Any = None) -> Any:
    response = await client.request(method, path, json=body)
    if response.status_code != expect:
        raise RuntimeError(f"{method} {path} returned {response.status_code}: {response.text}")
    return response.json() if response.content else None


@asynccontextmanager
async def system(state: Path, pool: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Scheduler and agent (storage on ``pool``) in this process; a client of their API."""
    token, api_key = secrets.token_urlsafe(32), new_secret()
    scheduler = SchedulerConfig.load(
        None, bind=f"{LOOPBACK}:0", database_url=f"sqlite:///{state / 'chaser.db'}", token=token,
        bootstrap_api_key=api_key, workspace_disk_gb=DISK_GB,
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_scheduler, scheduler)
        agent = AgentConfig.load(
            None, host_id="bench", bind=f"{LOOPBACK}:0", state_dir=state / "agent", images_dir=IMAGES_DIR,
            scheduler_url=url, token=token, storage_dir=pool, destroy_on_shutdown=True,
        )  # fmt: skip
        await nursery.start(serve_agent, agent)
        headers = {"Authorization": f"Bearer {api_key}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, trust_env=False) as client:
            yield client
        nursery.cancel_scope.cancel()


async def timed(samples: Samples, metric: str, call: Any) -> Any:
    started = time.perf_counter()
    result = await call
    samples[metric].append(time.perf_counter() - started)
    return result


async def measure_pool(fs: str, pool: Path, state: Path, rounds: int, warmup: int, data_mib: int) -> Samples:
    samples: Samples = defaultdict(list)
    async with system(state, pool) as client:
        workspace = await api(client, "POST", "/v1/workspaces", 201, {"name": "bench"})
        fill = f"head -c {data_mib}M /dev/urandom > blob && sync && du -m blob"
        filled = await api(
            client, "POST", "/v1/exec", 200, {"workspace": "bench", "command": fill, "timeout_ms": 900_000}
        )
        if filled["exit_code"] != 0:
            raise RuntimeError(f"filling the workspace failed: {filled['output']}")
        await api(client, "PATCH", "/v1/workspaces/bench", 200, {"is_template": True})
        await trio.run_process(["sync"])  # the disk file's pages reach XFS before anything is timed
        disk = pool / "disks" / f"{workspace['id']}.img"
        label, raw = RAW_COPY[fs]
        for i in range(warmup + rounds):
            print(f"{fs}: {'warm-up' if i < warmup else f'round {i + 1 - warmup}/{rounds}'}", file=sys.stderr)
            into: Samples = samples if i >= warmup else defaultdict(list)
            snap = await timed(into, f"{fs}_snapshot", api(client, "POST", "/v1/workspaces/bench/snapshots", 201, {}))
            clone = await timed(
                into, f"{fs}_clone", api(client, "POST", "/v1/workspaces/bench/clone", 201, {"name": f"c{i}"})
            )
            await api(client, "DELETE", f"/v1/workspaces/bench/snapshots/{snap['id']}", 204)
            await api(client, "DELETE", f"/v1/workspaces/{clone['id']}", 204)
            copy = pool / "staging" / f"raw-{i}.img"
            await timed(into, f"{fs}_raw", trio.run_process([*raw, str(disk), str(copy)]))
            copy.unlink()
        await api(client, "DELETE", "/v1/workspaces/bench", 204)
    print(f"{fs}: {label} baseline measured beside it", file=sys.stderr)
    return samples


async def run(rounds: int, warmup: int, data_mib: int) -> Samples:
    work = Path(tempfile.mkdtemp(prefix="chaser-bench-ws-"))
    samples: Samples = defaultdict(list)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(fail_on_sigterm)
            for fs in ("xfs", "ext4"):
                with loop_pool(work, fs) as pool:
                    state = work / f"state-{fs}"
                    try:
                        samples.update(await measure_pool(fs, pool, state, rounds, warmup, data_mib))
                    finally:
                        leaked = mounts.mounts_under(state)
                        if leaked:
                            raise RuntimeError(f"workspace mounts left behind: {leaked}")
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return samples


def summarize(samples: Samples, rounds: int, data_mib: int) -> dict[str, Any]:
    out = []
    for row in rows():
        ours, base = samples[row.metric], samples[row.baseline_metric]
        out.append(
            {
                "path": row.label,
                "n": len(ours),
                "p50_ms": round(percentile(ours, 0.5) * 1000, 2),
                "p95_ms": round(percentile(ours, 0.95) * 1000, 2),
                "baseline": row.baseline_label,
                "baseline_p50_ms": round(percentile(base, 0.5) * 1000, 2),
                "baseline_p95_ms": round(percentile(base, 0.95) * 1000, 2),
            }
        )
    return {"rounds": rounds, "data_mib": data_mib, "disk_gib": DISK_GB, "rows": out}


def table(summary: dict[str, Any]) -> str:
    header = ("path", "n", "p50 ms", "p95 ms", "raw baseline", "p50 ms", "p95 ms")
    lines = [header] + [
        (
            r["path"],
            str(r["n"]),
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            r["baseline"],
            f"{r['baseline_p50_ms']:.1f}",
            f"{r['baseline_p95_ms']:.1f}",
        )
        for r in summary["rows"]
    ]
    text = aligned(lines, left=(0, 4))
    text.append(
        f"\n{summary['data_mib']} MiB of random data on a {summary['disk_gib']} GiB disk, {summary['rounds']} rounds"
    )
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_workspaces", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds per pool (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--data-mib", type=int, default=1024, help="data in the workspace (default 1024)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or not 1 <= args.data_mib <= 1536:
        parser.error("--rounds at least 1, --warmup at least 0, --data-mib between 1 and 1536")
    for var in PROXY_VARS:
        os.environ.pop(var, None)
    samples = trio.run(run, args.rounds, args.warmup, args.data_mib)
    summary = summarize(samples, args.rounds, args.data_mib)
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
