"""A bounded load test: N clients for T seconds of mixed API and session endpoint calls.

Runs the system with ``chaser up`` (loopback only, rate limits on, the
per-credential bucket set low enough that the clients sharing the main key
provoke 429s) and, in two sessions, has each client loop over: list and
get sessions, ``POST /v1/exec``, a file read through the edge router with a
session token, ``GET /v1/quotas``, a token mint, and an anonymous call (a
401). It prints requests/s, p50/p99 latency, the statuses seen, anything
that was neither expected nor a 429 (there should be none), and the
``chaser up`` process's resident memory (scheduler and agent share it)
before the load, right after it, and after a settle.

    python -m benchmarks.bench_load [--clients 16] [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

from benchmarks.bench_sessions import fail_on_sigterm, percentile
from benchmarks.system import PROXY_VARS, chaser_up

RATE_LIMITS = '{"per_credential": {"rate": 20, "burst": 40}, "per_address": {"rate": 5000, "burst": 10000}}'
EXPECTED = {200, 201, 401, 429}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run(clients: int, seconds: float) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix="chaser-bench-load-"))
    state_dir.chmod(0o711)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    unexpected: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(fail_on_sigterm)
        async with chaser_up(state_dir, RATE_LIMITS) as system:
            headers = {"Authorization": f"Bearer {system.credentials.api_key}"}
            async with httpx.AsyncClient(base_url=system.url, headers=headers, timeout=60, trust_env=False) as api:
                sessions = [(await api.post("/v1/sessions", json={"ephemeral": True})).json()["id"] for _ in range(2)]
                tokens = {
                    s: (await api.post(f"/v1/sessions/{s}/tokens", json={"scopes": ["files.read"]})).json()["token"]
                    for s in sessions
                }
                await trio.sleep(2)
                before = rss_mb(system.pid)

                def calls(session: str) -> list[tuple[str, str, dict[str, Any]]]:
                    return [
                        ("GET", "/v1/sessions", {}),
                        ("GET", f"/v1/sessions/{session}", {}),
                        ("POST", "/v1/exec", {"json": {"session_id": session, "command": "true"}}),
                        ("GET", f"/s/{session}/files/etc/hostname", {"anonymous_token": tokens[session]}),
                        ("GET", "/v1/quotas", {}),
                        ("POST", f"/v1/sessions/{session}/tokens", {"json": {}}),
                        ("GET", "/v1/sessions", {"anonymous": True}),
                    ]

                async def client(index: int, deadline: float) -> None:
                    rng = random.Random(index)
                    async with httpx.AsyncClient(base_url=system.url, timeout=60, trust_env=False) as raw:
                        while time.monotonic() < deadline:
                            method, path, extra = rng.choice(calls(rng.choice(sessions)))
                            if "anonymous_token" in extra:
                                call_headers = {"Authorization": f"Bearer {extra['anonymous_token']}"}
                            elif extra.get("anonymous"):
                                call_headers = {}
                            else:
                                call_headers = headers
                            started = time.monotonic()
                            try:
                                response = await raw.request(method, path, json=extra.get("json"), headers=call_headers)
                            except httpx.HTTPError as exc:
                                unexpected[f"{method} {path.split('/')[2]}: {type(exc).__name__}"] += 1
                                continue
                            latencies.append(time.monotonic() - started)
                            statuses[response.status_code] += 1
                            if response.status_code not in EXPECTED:
                                unexpected[f"{method} {path}: {response.status_code} {response.text[:120]}"] += 1

                started = time.monotonic()
                async with trio.open_nursery() as load:
                    for index in range(clients):
                        load.start_soon(client, index, started + seconds)
                elapsed = time.monotonic() - started
                right_after = rss_mb(system.pid)
                await trio.sleep(5)
                settled = rss_mb(system.pid)
                for session in sessions:
                    await api.delete(f"/v1/sessions/{session}")
        nursery.cancel_scope.cancel()
    shutil.rmtree(state_dir, ignore_errors=True)
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "statuses": dict(sorted(statuses.items())),
        "unexpected": dict(unexpected),
        "rss_mb": {"before": round(before, 1), "after": round(right_after, 1), "settled": round(settled, 1)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_load", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for var in PROXY_VARS:
        os.environ.pop(var, None)
    result = trio.run(run, args.clients, args.seconds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:16} {value}")
    return 1 if result["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
