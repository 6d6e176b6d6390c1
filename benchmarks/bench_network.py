"""Sessions' networking: what the slot pool saves, and what the NAT path carries.

In one run, on this host only (loopback and namespaces made here):

* the cost of one network slot (netns + veth + addresses, what the pool
  makes ahead) made with pyroute2, beside ``ip netns add`` + ``ip link add``;
* session create (``POST /v1/sessions``) with the pool warm, beside create
  with an empty pool (every create makes its slot), each on its own
  embedded system started in this process;
* throughput of a session sending to a server in a "world" namespace made
  here, through the agent's NAT, beside the same sender on the host's
  loopback.

    python -m benchmarks.bench_network [--sessions 20] [--slots 20] [--transfers 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import httpx
import trio
from pyroute2 import IPRoute, netns

from agent.network import links
from agent.network.addressing import SlotPlan
from benchmarks.bench_sessions import api, percentile
from benchmarks.system import LOOPBACK, PROXY_VARS, free_port
from chaser.embedded import Paths
from serving import embedded

IMAGES_DIR = Path("/var/lib/chaser/images")
SINK = "203.0.113.80"  # owned by the world namespace made here
SINK_PORT = 9000
MIB = 1 << 20
# Sends argv[3] MiB to argv[1]:argv[2].
SENDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
chunk = bytes(1 << 20)
for _ in range(int(sys.argv[3])):
    s.sendall(chunk)
s.close()
"""

Samples = dict[str, list[float]]


# -- one slot --------------------------------------------------------------


def slot_costs(count: int, samples: Samples) -> None:
    """Time pyroute2 slots (as the pool makes them) and the iproute2 equivalent, interleaved."""
    plan = SlotPlan(f"b{secrets.token_hex(3)}", IPv4Network("10.254.250.0/24"))
    try:
        for i in range(count):
            slot = plan.slot(i)
            t = time.perf_counter()
            links.create_slot(slot)
            samples["slot"].append(time.perf_counter() - t)
            links.remove_slot(slot.name)
            name = f"{plan.prefix}-x{i}"
            t = time.perf_counter()
            subprocess.run(["ip", "netns", "add", name], check=True)
            subprocess.run(
                ["ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name], check=True
            )
            samples["slot_ip"].append(time.perf_counter() - t)
            subprocess.run(["ip", "link", "del", name], check=True)
            subprocess.run(["ip", "netns", "del", name], check=True)
    finally:
        names, host_links = links.own_objects(plan.index_of)
        for name in names | host_links:
            links.remove_slot(name)


# -- a system --------------------------------------------------------------


@contextmanager
def agent_environment(**network: str) -> Iterator[None]:
    """Network settings for the embedded agent, through its environment (restored after)."""
    keys = {f"CHASER_AGENT_NETWORK__{k.upper()}": v for k, v in network.items()}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@asynccontextmanager
async def system(**network: str) -> AsyncIterator[httpx.AsyncClient]:
    """An embedded scheduler and agent with these network settings, and a client; all removed after."""
    state_dir = Path(tempfile.mkdtemp(prefix="chaser-bench-net-"))
    state_dir.chmod(0o711)  # containers' root (an unprivileged uid) passes through
    settings = {
        "prefix": f"b{secrets.token_hex(3)}",
        "subnet": "10.254.240.0/22",
        "route_table": str(60_000 + secrets.randbelow(5000)),
        **network,
    }
    try:
        async with trio.open_nursery() as nursery:
            with agent_environment(**settings):
                serve = partial(embedded.serve, state_dir, port=free_port(), images_dir=IMAGES_DIR)
                url: str = await nursery.start(serve)
            if httpx.URL(url).host != LOOPBACK:
                raise RuntimeError(f"the API is at {url}, not on {LOOPBACK}")
            key = embedded.load_credentials(Paths(state_dir)).api_key
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120, trust_env=False
            ) as client:
                yield client
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


async def creates(client: httpx.AsyncClient, count: int, into: list[float]) -> None:
    """Create and delete ``count`` sessions one at a time, timing each create."""
    for _ in range(count):
        t = time.perf_counter()
        session = await api(client, "POST", "/v1/sessions", 201, {"ephemeral": True})
        into.append(time.perf_counter() - t)
        await api(client, "DELETE", f"/v1/sessions/{session['id']}", 200)


# -- throughput ------------------------------------------------------------


def make_world(name: str) -> None:
    """A namespace standing for the outside: 198.51.100.1/30 (host) <-> .2, and the sink's address."""
    netns.create(name)
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
        (index,) = ipr.link_lookup(ifname=name)
        ipr.addr("add", index=index, address="198.51.100.1", prefixlen=30)
        ipr.link("set", index=index, state="up")
    with IPRoute(netns=f"/run/netns/{name}", flags=0) as inside:
        inside.link("set", index=1, state="up")
        inside.addr("add", index=1, address=SINK, prefixlen=32)
        (eth,) = inside.link_lookup(ifname="eth0")
        inside.addr("add", index=eth, address="198.51.100.2", prefixlen=30)
        inside.link("set", index=eth, state="up")


def remove_world(name: str) -> None:
    links.remove_slot(name)


async def sink(listener: trio.socket.SocketType, rates: list[float]) -> None:
    """Receive each connection to its end; record MiB/s from first byte to EOF."""
    while True:
        conn, _ = await listener.accept()
        with conn:
            received, started = 0, None
            while data := await conn.recv(1 << 20):
                started = started or time.perf_counter()
                received += len(data)
            if started is not None:
                rates.append(received / MIB / (time.perf_counter() - started))


async def throughput(transfers: int, mib: int, samples: Samples) -> None:
    world = f"bw{secrets.token_hex(3)}"
    await trio.to_thread.run_sync(make_world, world)
    try:
        async with trio.open_nursery() as nursery:
            raw = await trio.to_thread.run_sync(lambda: netns.create_socket(world))
            nat_listener = trio.socket.from_stdlib_socket(raw)
            await nat_listener.bind((SINK, SINK_PORT))
            nat_listener.listen()
            local_listener = trio.socket.socket()
            await local_listener.bind((LOOPBACK, 0))
            local_listener.listen()
            local_port = local_listener.getsockname()[1]
            nursery.start_soon(sink, nat_listener, samples["nat"])
            nursery.start_soon(sink, local_listener, samples["loopback"])
            async with system(uplink=world, uplink_gateway="198.51.100.2") as client:
                session = await api(client, "POST", "/v1/sessions", 201, {"ephemeral": True})
                command = f"python3 -c {shlex.quote(SENDER)} {SINK} {SINK_PORT} {mib}"
                for _ in range(transfers):
                    before = len(samples["nat"])
                    result = await api(
                        client, "POST", "/v1/exec", 200, {"session_id": session["id"], "command": command}
                    )
                    if result["exit_code"] != 0:
                        raise RuntimeError(f"the sender failed in the session: {result['output']}")
                    with trio.fail_after(30):
                        while len(samples["nat"]) == before:
                            await trio.sleep(0.01)
                    await trio.run_process(
                        [sys.executable, "-c", SENDER, LOOPBACK, str(local_port), str(mib)], check=True
                    )
                await api(client, "DELETE", f"/v1/sessions/{session['id']}", 200)
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(remove_world, world)


# -- the run ---------------------------------------------------------------


async def run(sessions: int, slots: int, transfers: int, mib: int) -> Samples:
    samples: Samples = defaultdict(list)
    await trio.to_thread.run_sync(slot_costs, slots, samples)
    async with system(pool_size="4", cooldown="0.2") as client:
        await creates(client, 1, [])  # warm-up
        await creates(client, sessions, samples["warm"])
    # No ready slots, and a released one never returns within the run: every create makes its own.
    async with system(pool_size="0", cooldown="3600") as client:
        await creates(client, 1, [])
        await creates(client, sessions, samples["empty"])
    await throughput(transfers, mib, samples)
    return samples


def summarize(samples: Samples, mib: int) -> dict[str, Any]:
    def ms(metric: str) -> dict[str, Any]:
        values = samples[metric]
        return {"n": len(values), "p50_ms": round(percentile(values, 0.5) * 1000, 2),
                "p95_ms": round(percentile(values, 0.95) * 1000, 2)}  # fmt: skip

    def rate(metric: str) -> dict[str, Any]:
        values = samples[metric]
        # For rates the low end is the bad one: p95 of the slowest.
        return {"n": len(values), "p50_mib_s": round(percentile(values, 0.5)),
                "p5_mib_s": round(percentile(values, 0.05))}  # fmt: skip

    return {
        "slot (netns+veth+addresses, pyroute2)": ms("slot"),
        "baseline: ip netns add + ip link add veth": ms("slot_ip"),
        "session create, warm pool": ms("warm"),
        "session create, empty pool": ms("empty"),
        f"session -> world through NAT ({mib} MiB)": rate("nat"),
        f"baseline: host loopback ({mib} MiB)": rate("loopback"),
    }


def table(summary: dict[str, Any]) -> str:
    lines = []
    for label, figures in summary.items():
        if "p50_ms" in figures:
            lines.append(
                f"{label:48} n={figures['n']:<3} p50 {figures['p50_ms']:8.1f} ms  p95 {figures['p95_ms']:8.1f} ms"
            )
        else:
            lines.append(
                f"{label:48} n={figures['n']:<3} p50 {figures['p50_mib_s']:8} MiB/s  p5 {figures['p5_mib_s']:6} MiB/s"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_network", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20, help="creates timed per pool state (default 20)")
    parser.add_argument("--slots", type=int, default=20, help="slots made and removed (default 20)")
    parser.add_argument("--transfers", type=int, default=5, help="transfers each way (default 5)")
    parser.add_argument("--mib", type=int, default=256, help="MiB per transfer (default 256)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if min(args.sessions, args.slots, args.transfers, args.mib) < 1:
        parser.error("every count must be at least 1")
    for var in PROXY_VARS:
        os.environ.pop(var, None)
    summary = summarize(trio.run(run, args.sessions, args.slots, args.transfers, args.mib), args.mib)
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
