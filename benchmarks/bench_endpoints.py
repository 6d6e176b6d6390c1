"""Session endpoints: what the edge router and the agent's streams cost, next to raw baselines.

Runs the system with ``chaser up`` in its own process (loopback only) and,
in one session, interleaving each measurement with its
baseline so both see the same host conditions:

* exec round trip of ``true`` through the router (``/s/<id>/exec``
  WebSocket, connect to exit frame), the same WebSocket straight to the
  agent (no router hop), ``POST /v1/exec``, and ``lxc-attach -- true`` on the
  same container;
* PTY output throughput: ``cat`` of a large file through the PTY WebSocket
  (and the exec stream), against ``cat`` of it to ``/dev/null`` inside the
  sandbox, through a pipe inside the sandbox, and on a raw pty inside the
  sandbox read by a small Python loop (a terminal's own ceiling: the
  kernel hands a pty's output out 4 KiB a read);
* time to first byte of a forwarded HTTP port (path style through the
  router), against the same request sent straight to the port from a socket
  made in the session's network namespace (as the agent reaches it).

    python -m benchmarks.bench_endpoints [--rounds 30] [--mb 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import lxc
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from agent.network import netns
from benchmarks.bench_sessions import Samples, aligned, fail_on_sigterm, percentile
from benchmarks.system import PROXY_VARS, chaser_up, container_name
from chaser.session_streams import RECEIVE_BUFFER
from chaser.wire import frames
from scheduler.store import Store

_MAX_MESSAGE = 16 << 20
# The raw ceiling of a terminal: ``cat`` on a raw pty, its master read in large reads.
PTY_READER = """
import os, pty, sys, tty
pid, fd = pty.fork()
if pid == 0:
    tty.setraw(0)
    os.execvp("cat", ["cat", sys.argv[1]])
try:
    while os.read(fd, 1 << 20):
        pass
except OSError:
    pass
"""
SERVER = "cd /root && (setsid python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &)"

# (label, metric, baseline label, baseline metric, unit)
ROWS = (
    ("exec round trip via router (WebSocket)", "exec_router", "lxc-attach -- true", "attach", "ms"),
    ("exec round trip straight to the agent", "exec_agent", "lxc-attach -- true", "attach", "ms"),
    ("exec round trip (POST /v1/exec)", "exec_api", "lxc-attach -- true", "attach", "ms"),
    ("PTY: cat FILE via WebSocket", "pty_mbs", "cat FILE >/dev/null inside", "inside_mbs", "MB/s"),
    ("PTY: cat FILE via WebSocket", "pty_mbs", "cat FILE | cat >/dev/null inside", "pipe_mbs", "MB/s"),
    ("PTY: cat FILE via WebSocket", "pty_mbs", "cat FILE on a raw pty, read inside", "pty_inside_mbs", "MB/s"),
    ("exec stream: cat FILE via WebSocket", "exec_mbs", "cat FILE | cat >/dev/null inside", "pipe_mbs", "MB/s"),
    ("TTFB forwarded port (/s/<id>/ports/8000/)", "ttfb_router", "TTFB port in its netns", "ttfb_direct", "ms"),
)


def connect(url: str, headers: list[tuple[bytes, bytes]]) -> AbstractAsyncContextManager[WebSocketConnection]:
    """A WebSocket configured as the SDK's: large messages, large reads."""
    return open_websocket_url(
        url, extra_headers=headers, max_message_size=_MAX_MESSAGE, receive_buffer_size=RECEIVE_BUFFER
    )


async def ws_exec(url: str, headers: list[tuple[bytes, bytes]], cmd: Any, sink: Callable[[bytes], None]) -> int:
    async with open_websocket_url(
        url, extra_headers=headers, max_message_size=_MAX_MESSAGE, receive_buffer_size=RECEIVE_BUFFER
    ) as ws:
        await ws.get_message()  # hello
        await ws.send_message(frames.encode({"t": "exec", "cmd": cmd}))
        while True:
            frame = frames.decode_any(await ws.get_message())  # type: ignore[arg-type]
            if frame["t"] in ("out", "err"):
                sink(frame["d"])
            elif frame["t"] == "exit":
                return int(frame["code"])
            elif frame["t"] == "error":
                raise RuntimeError(frame)


async def ws_pty_cat(url: str, headers: list[tuple[bytes, bytes]], path: str) -> int:
    received = 0
    async with open_websocket_url(
        url, extra_headers=headers, max_message_size=_MAX_MESSAGE, receive_buffer_size=RECEIVE_BUFFER
    ) as ws:
        await ws.get_message()
        await ws.send_message(frames.encode({"t": "open", "ch": 1, "cmd": f"stty raw -echo && cat {path}"}))
        while True:
            frame = frames.decode_any(await ws.get_message())  # type: ignore[arg-type]
            if frame["t"] == "out":
                received += len(frame["d"])
            elif frame["t"] == "exit":
                return received


async def attach(lxc_path: Path, name: str, *argv: str) -> None:
    command = ["lxc-attach", "-P", str(lxc_path), "-n", name, "--clear-env", "--", *argv]
    await trio.run_process(command, capture_stdout=True, capture_stderr=True)


def http_ttfb(connect: Callable[[], socket.socket], target: str, host: str, auth: str | None) -> float:
    """Connect, send one GET, wait for the first byte of the answer; that time, and read the rest."""
    head = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    head += f"Authorization: Bearer {auth}\r\n" if auth else ""
    started = time.perf_counter()
    with connect() as sock:
        sock.sendall((head + "\r\n").encode())
        first = sock.recv(65536)
        ttfb = time.perf_counter() - started
        if not first.startswith(b"HTTP/1.") or b" 200 " not in first.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"unexpected answer {first[:200]!r}")
        while sock.recv(65536):
            pass
    return ttfb


async def wait_for_port(pid: int, port: int) -> None:
    """Until the server started in the background listens (a round would meet a 502 before)."""
    with trio.fail_after(30):
        while True:
            try:
                await trio.to_thread.run_sync(lambda: in_netns(pid, port).close())
                return
            except ConnectionRefusedError:
                await trio.sleep(0.05)


def in_netns(pid: int, port: int) -> socket.socket:
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        sock = netns.tcp_socket_in(fd)
    finally:
        os.close(fd)
    sock.connect(("127.0.0.1", port))
    return sock


async def measure(client: httpx.AsyncClient, url: str, agent: dict[str, Any], state_dir: Path, rounds: int, mb: int,
                  samples: Samples) -> None:  # fmt: skip
    session = (await client.post("/v1/sessions", json={"ephemeral": True})).json()
    sid = session["id"]
    lxc_path = state_dir / "agent" / "lxc"
    ws_base = url.replace("http://", "ws://")
    router = [(b"authorization", client.headers["authorization"].encode())]
    direct = [(b"authorization", f"Bearer {agent['token']}".encode())]
    agent_ws = agent["url"].replace("http://", "ws://") + f"/v1/sandboxes/{sid}"
    try:
        made = await client.post(
            "/v1/exec", json={"session_id": sid, "command": f"head -c {mb << 20} /dev/urandom > /root/big; {SERVER}"}
        )
        if made.json()["exit_code"] != 0:
            raise RuntimeError(made.text)
        name = container_name(lxc_path, sid)  # for LXC's tools
        await wait_for_port(lxc.Container(name, str(lxc_path)).init_pid, 8000)
        for i in range(rounds + 1):
            print(f"latency round {i}/{rounds}" if i else "warm-up", file=sys.stderr)
            into: Samples = samples if i else defaultdict(list)  # the first round warms up
            t = time.perf_counter()
            await ws_exec(f"{ws_base}/s/{sid}/exec", router, ["true"], lambda _: None)
            into["exec_router"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await ws_exec(f"{agent_ws}/exec", direct, ["true"], lambda _: None)
            into["exec_agent"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await client.post("/v1/exec", json={"session_id": sid, "command": ["true"]})
            into["exec_api"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await attach(lxc_path, name, "true")
            into["attach"].append(time.perf_counter() - t)

            pid = lxc.Container(name, str(lxc_path)).init_pid
            api = httpx.URL(url)
            key = client.headers["authorization"].split()[1]
            via_router = partial(socket.create_connection, (api.host, api.port))
            ttfb = partial(http_ttfb, via_router, f"/s/{sid}/ports/8000/", api.netloc.decode(), key)
            into["ttfb_router"].append(await trio.to_thread.run_sync(ttfb))
            into["ttfb_direct"].append(
                await trio.to_thread.run_sync(http_ttfb, partial(in_netns, pid, 8000), "/", "127.0.0.1:8000", None)
            )

        size = mb << 20
        for i in range(max(3, rounds // 5) + 1):
            print(f"throughput round {i}" if i else "throughput warm-up", file=sys.stderr)
            into = samples if i else defaultdict(list)
            t = time.perf_counter()
            got = await ws_pty_cat(f"{ws_base}/s/{sid}/pty", router, "/root/big")
            into["pty_mbs"].append(got / (time.perf_counter() - t) / 1e6)
            received = 0

            def count(data: bytes) -> None:
                nonlocal received
                received += len(data)

            t = time.perf_counter()
            await ws_exec(f"{ws_base}/s/{sid}/exec", router, ["cat", "/root/big"], count)
            into["exec_mbs"].append(received / (time.perf_counter() - t) / 1e6)
            if got != size or received != size:
                raise RuntimeError(f"lost bytes: pty {got}, exec {received} of {size}")
            t = time.perf_counter()
            await attach(lxc_path, name, "sh", "-c", "cat /root/big >/dev/null")
            into["inside_mbs"].append(size / (time.perf_counter() - t) / 1e6)
            t = time.perf_counter()
            await attach(lxc_path, name, "sh", "-c", "cat /root/big | cat >/dev/null")
            into["pipe_mbs"].append(size / (time.perf_counter() - t) / 1e6)
            t = time.perf_counter()
            await attach(lxc_path, name, "python3", "-c", PTY_READER, "/root/big")
            into["pty_inside_mbs"].append(size / (time.perf_counter() - t) / 1e6)
    finally:
        with trio.CancelScope(shield=True):
            await client.delete(f"/v1/sessions/{sid}", params={"force": "true"})


async def run(rounds: int, mb: int) -> Samples:
    state_dir = Path(tempfile.mkdtemp(prefix="chaser-bench-endpoints-"))
    state_dir.chmod(0o711)  # containers' root (an unprivileged uid) passes through
    samples: Samples = defaultdict(list)
    async with trio.open_nursery() as nursery:
        await nursery.start(fail_on_sigterm)
        async with chaser_up(state_dir) as system:
            store = Store(f"sqlite:///{state_dir / 'chaser.db'}")
            try:
                host = store.host("embedded")
            finally:
                store.close()
            assert host is not None
            agent = {"url": host["url"], "token": system.credentials.token}
            headers = {"Authorization": f"Bearer {system.credentials.api_key}"}
            async with httpx.AsyncClient(base_url=system.url, headers=headers, timeout=300, trust_env=False) as client:
                await measure(client, system.url, agent, state_dir, rounds, mb, samples)
        nursery.cancel_scope.cancel()
    leftovers = list((state_dir / "agent" / "lxc").iterdir()) if (state_dir / "agent" / "lxc").exists() else []
    if leftovers:
        raise RuntimeError(f"left behind: {leftovers}")
    shutil.rmtree(state_dir, ignore_errors=True)
    return samples


def summarize(samples: Samples, rounds: int, mb: int) -> dict[str, Any]:
    rows = []
    for label, metric, base_label, base_metric, unit in ROWS:
        scale = 1000 if unit == "ms" else 1
        ours, base = samples[metric], samples[base_metric]
        # For throughput, p50/p95 of the rate: the p95 row is the slow tail, the 5th percentile.
        q95 = 0.95 if unit == "ms" else 0.05
        rows.append({
            "path": label, "unit": unit, "n": len(ours),
            "p50": round(percentile(ours, 0.5) * scale, 2), "p95": round(percentile(ours, q95) * scale, 2),
            "baseline": base_label,
            "baseline_p50": round(percentile(base, 0.5) * scale, 2),
            "baseline_p95": round(percentile(base, q95) * scale, 2),
        })  # fmt: skip
    return {"rounds": rounds, "file_mb": mb, "rows": rows}


def table(summary: dict[str, Any]) -> str:
    header = ("path", "unit", "n", "p50", "p95", "baseline", "p50", "p95")
    lines = [header] + [
        (r["path"], r["unit"], str(r["n"]), f"{r['p50']:.1f}", f"{r['p95']:.1f}", r["baseline"],
         f"{r['baseline_p50']:.1f}", f"{r['baseline_p95']:.1f}")
        for r in summary["rows"]
    ]  # fmt: skip
    text = aligned(lines, left=(0, 1, 5))
    text.append(f"\n{summary['rounds']} rounds, {summary['file_mb']} MB file; MB/s rows: p95 is the slowest 5%")
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_endpoints", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="latency rounds (default 30)")
    parser.add_argument("--mb", type=int, default=200, help="size of the file cat through the streams (default 200)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for var in PROXY_VARS:
        os.environ.pop(var, None)
    summary = summarize(trio.run(run, args.rounds, args.mb), args.rounds, args.mb)
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
