"""Browser sessions next to Chromium started by hand on the same host, in one run.

Starts the embedded scheduler and agent in this process (loopback only,
fresh state under /tmp) with an uplink into a "world" namespace made here,
where a small page is served at 203.0.113.80:8080 (the same page is served
on 127.0.0.1 for the baselines). Then, interleaved round by round:

- browser session create: ``POST /v1/sessions {"session_type": "browser"}``
  until its 201, which comes once Chromium's DevTools answer
  ``/json/version`` in the session; beside Debian's ``chromium`` started
  directly on the host with the same flags until its ``/json/version``
  answers (then killed);
- scrape job end to end: ``POST /v1/jobs`` of the seeds' ``browser.scrape``
  example (``selector: h1``) until the job reads ``succeeded`` (a fresh
  browser session, load, extract, terminate); beside ``chromium --headless
  --dump-dom`` of the same page on the host;
- CDP round trip: ``Runtime.evaluate`` of ``1+1`` on a page, over one open
  WebSocket, through the CDP proxy of one browser session in both URL
  styles (``/s/<id>/...`` and ``<id>.localhost``, a session token in the
  query), beside the same call straight to a Chromium on the host.

    python -m benchmarks.bench_browser [--rounds 10] [--calls 200] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import trio
import trio_websocket
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from pyroute2 import netns
from quart import Response
from quart_trio import QuartTrio

from agent.browser.chromium import FLAGS
from benchmarks.bench_network import SINK, make_world, remove_world, system
from benchmarks.bench_sessions import aligned, api, percentile
from benchmarks.system import LOOPBACK, PROXY_VARS, free_port

SITE_PORT = 8080
PAGE = "<!doctype html><title>bench</title><h1>Hello from the bench world</h1>"
POLL = 0.005

Samples = dict[str, list[float]]


def site() -> QuartTrio:
    app = QuartTrio("bench-site")

    @app.get("/")
    async def home() -> Response:
        return Response(PAGE, content_type="text/html")

    return app


async def serve_site(nursery: trio.Nursery, world: str) -> int:
    """The page, in the world (for sessions) and on loopback (for the baselines); the loopback port."""
    inside = await trio.to_thread.run_sync(lambda: netns.create_socket(world, socket.AF_INET, socket.SOCK_STREAM))
    inside.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    inside.bind((SINK, SITE_PORT))
    inside.listen(64)
    local_port = free_port()
    config = HypercornConfig()
    config.bind = [f"fd://{inside.detach()}", f"{LOOPBACK}:{local_port}"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    await nursery.start(partial(hypercorn_serve, site(), config))
    return local_port


# -- baselines: Chromium started by hand ----------------------------------------


async def devtools_answers(port: int) -> bool:
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            return (await client.get(f"http://{LOOPBACK}:{port}/json/version")).status_code == 200
    except httpx.HTTPError:
        return False


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Chromium and its helpers (renderers, zygotes), so none writes to the profile about to go."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def direct_launch(samples: list[float]) -> None:
    """Chromium on the host until its /json/version answers; then killed, its profile removed."""
    profile = tempfile.mkdtemp(prefix="chaser-bench-chromium-")
    port = free_port()
    argv = ["chromium", *(f for f in FLAGS if not f.startswith("--remote-debugging-port"))]
    argv += [f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"]
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with trio.fail_after(60):
            while not await devtools_answers(port):
                await trio.sleep(POLL)
        samples.append(time.perf_counter() - started)
    finally:
        kill_group(process)
        await trio.to_thread.run_sync(process.wait)
        shutil.rmtree(profile, ignore_errors=True)


async def direct_dump_dom(url: str, samples: list[float]) -> None:
    profile = tempfile.mkdtemp(prefix="chaser-bench-chromium-")
    try:
        flags = [f for f in FLAGS if not f.startswith("--remote-")]
        argv = ["chromium", *flags, f"--user-data-dir={profile}", "--dump-dom", url]
        started = time.perf_counter()
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True)
        samples.append(time.perf_counter() - started)
        if b"Hello from the bench world" not in done.stdout:
            raise RuntimeError("chromium --dump-dom did not print the page")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# -- Chaser ---------------------------------------------------------------------


async def browser_create(client: httpx.AsyncClient, samples: list[float]) -> None:
    started = time.perf_counter()
    session = await api(client, "POST", "/v1/sessions", 201, {"session_type": "browser", "ephemeral": True})
    samples.append(time.perf_counter() - started)
    await api(client, "DELETE", f"/v1/sessions/{session['id']}", 200)


async def scrape_job(client: httpx.AsyncClient, samples: list[float]) -> None:
    body = {"kind": "browser.scrape", "input": {"url": f"http://{SINK}:{SITE_PORT}/", "selector": "h1"}}
    started = time.perf_counter()
    job = await api(client, "POST", "/v1/jobs", 201, body)
    with trio.fail_after(120):
        while (job := await api(client, "GET", f"/v1/jobs/{job['id']}", 200))["status"] not in (
            "succeeded",
            "failed",
            "canceled",
        ):
            await trio.sleep(POLL)
    samples.append(time.perf_counter() - started)
    if job["status"] != "succeeded" or job["result"]["matches"] != [{"text": "Hello from the bench world"}]:
        raise RuntimeError(f"the scrape job did not scrape the page: {job}")


# -- CDP round trips -----------------------------------------------------------


async def evaluate_round_trips(
    stream: trio.SocketStream, host: str, resource: str, calls: int, into: list[float]
) -> None:
    """Attach to a new page over the browser WebSocket, then time ``calls`` evaluations of 1+1."""
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(nursery, stream, host, resource)
        ids = iter(range(1, 1 << 30))

        async def call(method: str, params: dict[str, Any], session: str | None = None) -> Any:
            message: dict[str, Any] = {"id": next(ids), "method": method, "params": params}
            if session is not None:
                message["sessionId"] = session
            await ws.send_message(json.dumps(message))
            while "id" not in (answer := json.loads(await ws.get_message())):
                pass  # an event
            return answer["result"]

        target = (await call("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = (await call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        for _ in range(calls):
            started = time.perf_counter()
            result = await call("Runtime.evaluate", {"expression": "1+1"}, session)
            into.append(time.perf_counter() - started)
            if result["result"]["value"] != 2:
                raise RuntimeError(f"Runtime.evaluate answered {result}")
        await call("Target.closeTarget", {"targetId": target})
        await ws.aclose()
        nursery.cancel_scope.cancel()


async def proxied(url: str, host: str, calls: int, into: list[float]) -> None:
    """Through the API's listener on loopback, naming ``host`` (the path style's, or the session's subdomain)."""
    parts = httpx.URL(url)
    stream = await trio.open_tcp_stream(LOOPBACK, parts.port or 80)
    resource = parts.raw_path.decode()
    await evaluate_round_trips(stream, host, resource, calls, into)


async def direct(port: int, calls: int, into: list[float]) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        version = (await client.get(f"http://{LOOPBACK}:{port}/json/version")).json()
    resource = httpx.URL(version["webSocketDebuggerUrl"]).raw_path.decode()
    stream = await trio.open_tcp_stream(LOOPBACK, port)
    await evaluate_round_trips(stream, f"{LOOPBACK}:{port}", resource, calls, into)


async def round_trips(client: httpx.AsyncClient, rounds: int, calls: int, samples: Samples) -> None:
    session = await api(client, "POST", "/v1/sessions", 201, {"session_type": "browser", "ephemeral": True})
    token = (await api(client, "POST", f"/v1/sessions/{session['id']}/tokens", 201, {}))["token"]
    version = await api(client, "GET", f"/s/{session['id']}/json/version?chaser_token={token}", 200)
    path_url = version["webSocketDebuggerUrl"]
    api_host = httpx.URL(path_url).netloc.decode()
    subdomain_host = f"{session['id']}.localhost:{httpx.URL(path_url).port}"
    subdomain_url = path_url.replace(f"/s/{session['id']}", "")
    profile = tempfile.mkdtemp(prefix="chaser-bench-chromium-")
    port = free_port()
    argv = ["chromium", *(f for f in FLAGS if not f.startswith("--remote-debugging-port"))]
    argv += [f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"]
    chromium = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with trio.fail_after(60):
            while not await devtools_answers(port):
                await trio.sleep(POLL)
        for i in range(rounds + 1):
            print(f"CDP round {i}/{rounds}" if i else "CDP warm-up", file=sys.stderr)
            await proxied(path_url, api_host, calls, samples["cdp_path"] if i else [])
            await proxied(subdomain_url, subdomain_host, calls, samples["cdp_subdomain"] if i else [])
            await direct(port, calls, samples["cdp_direct"] if i else [])
    finally:
        kill_group(chromium)
        await trio.to_thread.run_sync(chromium.wait)
        shutil.rmtree(profile, ignore_errors=True)
        await api(client, "DELETE", f"/v1/sessions/{session['id']}?force=true", 200)


# -- the run --------------------------------------------------------------------


async def run(rounds: int, calls: int) -> Samples:
    samples: Samples = defaultdict(list)
    world = f"bb{secrets.token_hex(3)}"
    await trio.to_thread.run_sync(make_world, world)
    try:
        async with trio.open_nursery() as nursery:
            local_port = await serve_site(nursery, world)
            local_url = f"http://{LOOPBACK}:{local_port}/"
            async with system(uplink=world, uplink_gateway="198.51.100.2") as client:
                steps: list[tuple[str, Callable[[list[float]], Awaitable[None]]]] = [
                    ("create", partial(browser_create, client)),
                    ("launch", direct_launch),
                    ("scrape", partial(scrape_job, client)),
                    ("dump_dom", partial(direct_dump_dom, local_url)),
                ]
                for i in range(rounds + 1):  # the first round warms up
                    print(f"round {i}/{rounds}" if i else "warm-up", file=sys.stderr)
                    for metric, step in steps:
                        await step(samples[metric] if i else [])
                await round_trips(client, rounds, calls, samples)
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(remove_world, world)
    return samples


ROWS = (
    ("browser session create (201 = CDP ready)", "create", "chromium on the host until /json/version", "launch"),
    ("browser.scrape job, submit -> succeeded", "scrape", "chromium --headless --dump-dom on the host", "dump_dom"),
    ("CDP Runtime.evaluate 1+1, proxy, path style", "cdp_path", "straight to Chromium on the host", "cdp_direct"),
    ("CDP Runtime.evaluate 1+1, proxy, subdomain", "cdp_subdomain", "straight to Chromium on the host", "cdp_direct"),
)


def summarize(samples: Samples) -> list[dict[str, Any]]:
    def ms(values: list[float], q: float) -> float:
        return round(percentile(values, q) * 1000, 3)

    return [
        {
            "path": label,
            "n": len(samples[ours]),
            "p50_ms": ms(samples[ours], 0.5),
            "p95_ms": ms(samples[ours], 0.95),
            "baseline": base_label,
            "baseline_p50_ms": ms(samples[base], 0.5),
            "baseline_p95_ms": ms(samples[base], 0.95),
            "ratio_p50": round(percentile(samples[ours], 0.5) / percentile(samples[base], 0.5), 2),
        }
        for label, ours, base_label, base in ROWS
    ]


def table(rows: list[dict[str, Any]]) -> str:
    header = ("path", "n", "p50 ms", "p95 ms", "baseline", "p50 ms", "p95 ms", "ratio p50")
    lines = [header] + [
        (r["path"], str(r["n"]), f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}", r["baseline"],
         f"{r['baseline_p50_ms']:.2f}", f"{r['baseline_p95_ms']:.2f}", f"{r['ratio_p50']:.2f}x")
        for r in rows
    ]  # fmt: skip
    text = aligned(lines, left=(0, 4))
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_browser", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds (default 10)")
    parser.add_argument("--calls", type=int, default=200, help="CDP round trips per style and round (default 200)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    if shutil.which("chromium") is None:
        parser.error("Debian's chromium is needed for the baselines (scripts/install installs it)")
    for var in PROXY_VARS:
        os.environ.pop(var, None)
    rows = summarize(trio.run(run, args.rounds, args.calls))
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
