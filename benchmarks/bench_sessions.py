"""Session latency through the public API, next to raw LXC tools on the same host.

Runs the system with ``chaser up`` in its own process (loopback only) and
times, over real HTTP, session create, exec and one-shot exec. In the
same run, interleaved so both see the same host conditions, it times the same
container lifecycle done directly with ``lxc-start``/``lxc-attach``/
``lxc-stop``/``lxc-destroy`` on a container configured as the agent
configures sandboxes. The ratio of the two is what Chaser adds; absolute
figures depend on the host, so nothing here judges them.

    python -m benchmarks.bench_sessions --sessions 20 [--warm-pool N] [--json]

The system runs as ``chaser up`` configures it, warm pool included (the
agent keeps containers started ahead and a create takes one); between two
Chaser rounds the baseline's round gives it time to start the next ones,
as gaps between requests do in use. ``--warm-pool 0`` measures every create
booting its container.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from agent.runtimes.base import SandboxSpec
from agent.runtimes.lxc.runtime import LxcRuntime
from agent.sandboxes.images import ImageStore
from benchmarks.system import IMAGES_DIR, PROXY_VARS, chaser_up, started_ahead
from vmimages import bundle

IMAGE = "default"

Samples = dict[str, list[float]]  # metric -> durations in seconds


@dataclass(frozen=True)
class Row:
    """A Chaser path and the raw-LXC work it is compared with."""

    label: str
    metric: str
    baseline_label: str
    baseline_metric: str


ROWS = (
    Row("create (POST /v1/sessions)", "create", "lxc-start -d", "start"),
    Row("create→first exec", "create_exec", "lxc-start -d + lxc-attach -- true", "start_attach"),
    Row("exec round trip (POST /v1/exec)", "exec", "lxc-attach -- true", "attach"),
    Row("one-shot ephemeral exec", "oneshot", "start + attach + stop + destroy", "lifecycle"),
    Row("terminate (DELETE /v1/sessions/{id})", "terminate", "lxc-stop -k + lxc-destroy", "teardown"),
)


def aligned(lines: Sequence[Sequence[str]], left: Collection[int]) -> list[str]:
    """Rows as text columns: those in ``left`` flush left, figures flush right, a rule under the header."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = [
        "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        for line in lines
    ]
    text.insert(1, "-" * len(text[0]))
    return text


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks, so p95 of few samples is not just the max."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# -- through the public API ------------------------------------------------


async def api(client: httpx.AsyncClient, method: str, path: str, expect: int, body: Any = None) -> Any:
    """One API call; any other status ends the run, since the timing would be of an error."""
    response = await client.request(method, path, json=body)
    if response.status_code != expect:
        raise RuntimeError(f"{method} {path} returned {response.status_code}: {response.text}")
    return response.json()


async def exec_true(client: httpx.AsyncClient, target: dict[str, Any]) -> None:
    """Run ``true``; a failure means a broken sandbox, whose timing would mislead."""
    result = await api(client, "POST", "/v1/exec", 200, {**target, "command": "true"})
    if result["exit_code"] != 0:
        raise RuntimeError(f"`true` exited {result['exit_code']}: {result['output']!r}")


async def chaser_round(client: httpx.AsyncClient, execs: int, samples: Samples) -> None:
    """One session (create, first exec, ``execs`` more, delete), then one one-shot exec."""
    started = time.perf_counter()
    session = await api(client, "POST", "/v1/sessions", 201, {"ephemeral": True, "image": IMAGE})
    created = time.perf_counter()
    target = {"session_id": session["id"]}
    try:
        await exec_true(client, target)
        samples["create"].append(created - started)
        samples["create_exec"].append(time.perf_counter() - started)
        for _ in range(execs):
            t = time.perf_counter()
            await exec_true(client, target)
            samples["exec"].append(time.perf_counter() - t)
    finally:
        with trio.CancelScope(shield=True):
            t = time.perf_counter()
            ended = await api(client, "DELETE", f"/v1/sessions/{session['id']}", 200)
            samples["terminate"].append(time.perf_counter() - t)
    if ended["status"] != "terminated":
        raise RuntimeError(f"DELETE left session {session['id']} {ended['status']}")
    t = time.perf_counter()
    await exec_true(client, {"ephemeral": True, "image": IMAGE})
    samples["oneshot"].append(time.perf_counter() - t)


# -- raw LXC baseline ------------------------------------------------------


async def lxc(tool: str, lxc_path: Path, name: str, *args: str, check: bool = True) -> None:
    """Run one LXC tool on one container; a failure carries the tool's stderr."""
    argv = [tool, "-P", str(lxc_path), "-n", name, *args]
    done = await trio.run_process(argv, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode().strip()}")


async def define(baseline: LxcRuntime, name: str, rootfs: Path) -> None:
    """Lay out a container exactly as the agent does: ``LxcRuntime.create`` itself (same
    user namespace, seccomp filter, mounts and init, the in-sandbox agent; loopback only)."""
    await baseline.create(SandboxSpec(id=name, image=IMAGE, rootfs=rootfs))


async def baseline_round(baseline: LxcRuntime, name: str, rootfs: Path, execs: int, samples: Samples) -> None:
    """The lifecycle of ``chaser_round`` done with LXC's tools (stop is a kill, as the agent's).

    On failure the container stays for ``run`` to remove, with the others.
    """
    lxc_path = baseline.lxc_path
    await define(baseline, name, rootfs)
    attach = ("--clear-env", "--", "true")  # the agent clears the environment too
    t0 = time.perf_counter()
    await lxc("lxc-start", lxc_path, name, "-d")
    t1 = time.perf_counter()
    await lxc("lxc-attach", lxc_path, name, *attach)
    t2 = time.perf_counter()
    for _ in range(execs):
        t = time.perf_counter()
        await lxc("lxc-attach", lxc_path, name, *attach)
        samples["attach"].append(time.perf_counter() - t)
    t3 = time.perf_counter()
    await lxc("lxc-stop", lxc_path, name, "-k")
    await lxc("lxc-destroy", lxc_path, name)
    t4 = time.perf_counter()
    samples["start"].append(t1 - t0)
    samples["start_attach"].append(t2 - t0)
    samples["teardown"].append(t4 - t3)
    samples["lifecycle"].append((t2 - t0) + (t4 - t3))


# -- leftovers -------------------------------------------------------------


def leftovers(lxc_path: Path) -> list[str]:
    """Containers still defined in ``lxc_path``, or still running for it.

    A running container's monitor listens on the abstract socket
    ``@<lxcpath>/<name>/command``; looking for those catches one whose
    directory is gone but whose processes are not, which a listing of the
    directory would miss (and python-lxc's monitors keep the agent's process
    title, so their command lines do not tell either).
    """
    names = {p.name for p in lxc_path.iterdir()} if lxc_path.exists() else set()
    prefix, suffix = f"@{lxc_path}/", "/command"
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        socket_path = line.split()[-1]
        if socket_path.startswith(prefix) and socket_path.endswith(suffix):
            names.add(socket_path.removeprefix(prefix).removesuffix(suffix))
    return sorted(names)


async def remove_all(lxc_path: Path) -> None:
    """Stop and destroy whatever is defined in ``lxc_path`` (only the overlay's upper layer goes)."""
    if not lxc_path.exists():
        return
    for home in lxc_path.iterdir():
        await lxc("lxc-destroy", lxc_path, home.name, "-f", check=False)
        shutil.rmtree(home, ignore_errors=True)


# -- the run ---------------------------------------------------------------


async def fail_on_sigterm(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """End the run on SIGTERM as on Ctrl-C, so that the cleanup runs either way."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            raise KeyboardInterrupt


@dataclass
class Result:
    samples: Samples
    leaked: list[str]  # containers left after every DELETE / lxc-destroy


async def run(sessions: int, execs: int, warmup: int) -> Result:
    """Start the system, run the rounds, stop it, and leave nothing behind."""
    rootfs = ImageStore(IMAGES_DIR).resolve(IMAGE).rootfs
    state_dir = Path(tempfile.mkdtemp(prefix="chaser-bench-state-"))
    state_dir.chmod(0o711)  # containers' root (an unprivileged uid) passes through
    baseline_path = Path(tempfile.mkdtemp(prefix="chaser-bench-lxc-"))
    baseline_path.chmod(0o711)  # containers' root (an unprivileged uid) passes through
    baseline = LxcRuntime(baseline_path / "lxc", bundle.build(IMAGES_DIR))
    agent_path = state_dir / "agent" / "lxc"
    samples: Samples = defaultdict(list)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(fail_on_sigterm)
            async with chaser_up(state_dir) as system:
                headers = {"Authorization": f"Bearer {system.credentials.api_key}"}
                client = httpx.AsyncClient(base_url=system.url, headers=headers, timeout=120, trust_env=False)
                async with client:
                    for i in range(warmup + sessions):
                        print(f"round {i + 1 - warmup}/{sessions}" if i >= warmup else "warm-up", file=sys.stderr)
                        into: Samples = samples if i >= warmup else defaultdict(list)
                        await chaser_round(client, execs, into)
                        await baseline_round(baseline, f"bench-{i}", rootfs, execs, into)
                # Before the agent stops: its shutdown would hide what the DELETEs left.
                # (The warm pool's containers, never taken by a session, are no leak.)
                pooled = started_ahead(agent_path)
                leaked = [n for n in leftovers(agent_path) if n not in pooled] + leftovers(baseline.lxc_path)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for path in (agent_path, baseline.lxc_path):
                await remove_all(path)
        remaining = leftovers(agent_path) + leftovers(baseline.lxc_path)
        if remaining:
            # Keep the directories: removing them would hide what still runs.
            raise RuntimeError(f"could not remove containers {remaining} in {agent_path} / {baseline_path}")
        shutil.rmtree(state_dir)
        shutil.rmtree(baseline_path)
    return Result(samples, leaked)


# -- report ----------------------------------------------------------------


def summarize(result: Result, sessions: int, execs: int, warmup: int) -> dict[str, Any]:
    rows = []
    for row in ROWS:
        ours, base = result.samples[row.metric], result.samples[row.baseline_metric]
        p50, base_p50 = percentile(ours, 0.5) * 1000, percentile(base, 0.5) * 1000
        rows.append(
            {
                "path": row.label,
                "n": len(ours),
                "p50_ms": round(p50, 2),
                "p95_ms": round(percentile(ours, 0.95) * 1000, 2),
                "baseline": row.baseline_label,
                "baseline_n": len(base),
                "baseline_p50_ms": round(base_p50, 2),
                "baseline_p95_ms": round(percentile(base, 0.95) * 1000, 2),
                "ratio_p50": round(p50 / base_p50, 2),
            }
        )
    return {"sessions": sessions, "execs_per_session": execs, "warmup": warmup, "rows": rows, "leaked": result.leaked}


def table(summary: dict[str, Any]) -> str:
    header = ("path", "n", "p50 ms", "p95 ms", "baseline", "p50 ms", "p95 ms", "ratio p50")
    lines = [header] + [
        (
            r["path"],
            str(r["n"]),
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            r["baseline"],
            f"{r['baseline_p50_ms']:.1f}",
            f"{r['baseline_p95_ms']:.1f}",
            f"{r['ratio_p50']:.1f}x",
        )
        for r in summary["rows"]
    ]
    text = aligned(lines, left=(0, 4))
    leaked = ", ".join(summary["leaked"]) or "none"
    text.append(f"\n{summary['sessions']} sessions, {summary['execs_per_session']} execs each; left behind: {leaked}")
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_sessions", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20, help="measured sessions (default 20)")
    parser.add_argument("--execs", type=int, default=5, help="exec round trips per session (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--warm-pool", type=int, help="containers the agent starts ahead (default: as configured)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.execs < 1 or args.warmup < 0:
        parser.error("--sessions and --execs must be at least 1, --warmup at least 0")
    for var in PROXY_VARS:
        os.environ.pop(var, None)
    if args.warm_pool is not None:
        os.environ["CHASER_AGENT_WARM_POOL__SIZE"] = str(args.warm_pool)  # read by the agent `chaser up` starts
    result = trio.run(run, args.sessions, args.execs, args.warmup)
    summary = summarize(result, args.sessions, args.execs, args.warmup)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else table(summary))
    return 1 if result.leaked else 0


if __name__ == "__main__":
    sys.exit(main())
