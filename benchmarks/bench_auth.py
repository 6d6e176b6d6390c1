"""What the multi-tenant layer costs per request, next to the same request without it.

Runs the scheduler alone (no agent: nothing here starts a sandbox) in this
process on 127.0.0.1 with a fresh SQLite store, and times over real HTTP:

- an authenticated read (``GET /v1/webhooks``) with an API key, and with an
  RS256 JWT verified against a JWKS file, beside ``GET /healthz`` (same
  server, same HTTP path, no authentication, no database);
- an audited mutation (``PATCH /v1/webhooks/{id}``: authentication, the
  change, the audit row) beside the authenticated read;
- webhook delivery latency: ``POST /v1/webhooks/{id}/ping`` until the
  receiver (``http.server`` on 127.0.0.1) has the request, beside a direct
  ``httpx`` POST of the same body to the same receiver.

Samples of each pair alternate, so both see the same host conditions.

    python -m benchmarks.bench_auth --requests 200 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from benchmarks.bench_sessions import percentile
from benchmarks.system import PROXY_VARS, free_port
from scheduler.auth import new_secret
from scheduler.config import SchedulerConfig
from scheduler.main import serve as serve_scheduler

Samples = dict[str, list[float]]

ROWS = (
    ("GET /v1/webhooks, API key", "key_read", "GET /healthz (no auth)", "healthz"),
    ("GET /v1/webhooks, JWT (RS256)", "jwt_read", "GET /healthz (no auth)", "healthz"),
    ("PATCH /v1/webhooks/{id} (audited)", "mutation", "GET /v1/webhooks, API key", "key_read"),
    ("event → receiver (ping, outbox, worker)", "delivery", "direct POST to the receiver", "direct"),
)


class Receiver:
    """Counts requests; ``arrived`` is set on each one."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.arrived.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    async def wait(self) -> None:
        await trio.to_thread.run_sync(self.arrived.wait, 10.0)
        if not self.arrived.is_set():
            raise RuntimeError("the receiver got nothing within 10 s")
        self.arrived.clear()


async def timed(samples: Samples, metric: str, call: Callable[[], Awaitable[Any]]) -> None:
    started = time.perf_counter()
    await call()
    samples[metric].append(time.perf_counter() - started)


async def expect(response: Awaitable[httpx.Response], status: int) -> httpx.Response:
    got = await response
    if got.status_code != status:
        raise RuntimeError(f"{got.request.method} {got.request.url} returned {got.status_code}: {got.text}")
    return got


async def measure(requests: int, state: Path) -> Samples:
    key = rsa.generate_private_key(65537, 2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "bench"}
    (state / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    api_key = new_secret()
    config = SchedulerConfig.load(
        None,
        bind=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite:///{state / 'chaser.db'}",
        token=secrets.token_hex(32),
        bootstrap_api_key=api_key,
        rate_limits={"enabled": False},  # the hot paths, not the limiter's 429s
        bootstrap_email="bench@localhost",
        jwt_issuer="https://bench.invalid/",
        jwt_audience="chaser",
        jwt_jwks_file=state / "jwks.json",
        webhook_block_private_networks=False,
    )
    now = int(time.time())
    token = jwt.encode(
        {"iss": "https://bench.invalid/", "aud": "chaser", "sub": "bench", "email": "bench@localhost",
         "iat": now, "exp": now + 3600},
        key, algorithm="RS256", headers={"kid": "bench"},
    )  # fmt: skip
    receiver = Receiver()
    receiver.thread.start()
    samples: Samples = defaultdict(list)
    try:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_scheduler, config)
            async with (
                httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {api_key}"}) as by_key,
                httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as by_jwt,
                httpx.AsyncClient() as plain,
            ):
                hook = (
                    await expect(by_key.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.failed"]}), 201)
                ).json()
                body = json.dumps({"id": "x", "type": "webhook.ping", "data": {}}).encode()
                for _ in range(requests):
                    await timed(samples, "healthz", lambda: expect(by_key.get("/healthz"), 200))
                    await timed(samples, "key_read", lambda: expect(by_key.get("/v1/webhooks"), 200))
                    await timed(samples, "jwt_read", lambda: expect(by_jwt.get("/v1/webhooks"), 200))
                    await timed(
                        samples,
                        "mutation",
                        lambda: expect(by_key.patch(f"/v1/webhooks/{hook['id']}", json={"description": "b"}), 200),
                    )

                    async def delivered() -> None:
                        await expect(by_key.post(f"/v1/webhooks/{hook['id']}/ping"), 202)
                        await receiver.wait()

                    async def direct() -> None:
                        await expect(plain.post(receiver.url, content=body), 200)
                        await receiver.wait()

                    await timed(samples, "delivery", delivered)
                    await timed(samples, "direct", direct)
            nursery.cancel_scope.cancel()
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    return samples


def report(samples: Samples, as_json: bool) -> None:
    def stats(metric: str) -> dict[str, float]:
        values = samples[metric]
        return {"p50_ms": percentile(values, 0.5) * 1000, "p95_ms": percentile(values, 0.95) * 1000}

    rows = []
    for label, metric, base_label, base_metric in ROWS:
        ours, base = stats(metric), stats(base_metric)
        rows.append(
            {"path": label, **ours, "baseline": base_label, "baseline_p50_ms": base["p50_ms"],
             "baseline_p95_ms": base["p95_ms"], "ratio_p50": ours["p50_ms"] / base["p50_ms"],
             "samples": len(samples[metric])}
        )  # fmt: skip
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'path':42} {'p50 ms':>8} {'p95 ms':>8}   {'baseline':30} {'p50 ms':>8} {'p95 ms':>8} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['path']:42} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f}   {r['baseline']:30} "
            f"{r['baseline_p50_ms']:8.2f} {r['baseline_p95_ms']:8.2f} {r['ratio_p50']:6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for name in PROXY_VARS:  # loopback only: no request may go through a proxy
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="chaser-bench-auth-") as state:
        samples = trio.run(measure, args.requests, Path(state))
    report(samples, args.json)


if __name__ == "__main__":
    main()
