"""Sessions try to get out, for real, from inside real sessions; every attempt must fail.

The agent's uplink leads into a test-made "outside world" namespace (see
``tests/world.py``): a session reaches its web server through NAT, and
nothing else: not another session, not the host (any of its addresses, the
agent's and scheduler's ports included), not the metadata stand-in at
169.254.169.254. No packet goes anywhere but loopback and namespaces made here.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import AsyncIterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from agent.network import links
from agent.network.addressing import SlotPlan
from tests.conftest import System, network_debris, network_settings, start_system, stop_system, wait_until
from tests.world import CGNAT, LAN, METADATA, OTHER_WEB, WEB, World, connect_inside, open_world

# Connects to argv[1]:argv[2] from inside a session; prints "open" or "blocked <why>".
PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except OSError as e:
    print("blocked", e)
"""


@pytest.fixture
async def world(nursery: trio.Nursery) -> AsyncIterator[World]:
    async with open_world(
        [(WEB, 8080), (WEB, 8081), (OTHER_WEB, 8080), (METADATA, 80), (LAN, 80), (CGNAT, 80)]
    ) as made:
        yield made


@pytest.fixture
async def net_system(nursery: trio.Nursery, tmp_path: Path, images_dir: Path, world: World) -> AsyncIterator[System]:
    network = network_settings(uplink=world.name, uplink_gateway=world.gateway)
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", agent_overrides={"network": network}
    )
    try:
        yield system
    finally:
        await stop_system(system)


async def new_session(system: System, **fields: Any) -> dict[str, Any]:
    response = await system.client.post("/v1/sessions", json={"ephemeral": True, **fields})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def run(system: System, session: dict[str, Any], command: str) -> dict[str, Any]:
    response = await system.client.post(
        "/v1/exec", json={"session_id": session["id"], "command": command, "timeout_ms": 30_000}
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def probe(system: System, session: dict[str, Any], host: str, port: int) -> str:
    result = await run(system, session, f"python3 -c {shlex.quote(PROBE)} {host} {port}")
    return str(result["output"]).strip()


async def curl(system: System, session: dict[str, Any], url: str) -> dict[str, Any]:
    return await run(system, session, f"curl -sS --max-time 5 {url}")


def address_of(session: dict[str, Any], system: System) -> dict[str, Any]:
    record = json.loads((system.lxc_path.parent / "sandboxes" / f"{session['id']}.json").read_text())
    return record["network"]  # type: ignore[no-any-return]


async def test_session_reaches_the_outside_through_nat(net_system: System, world: World) -> None:
    session = await new_session(net_system)
    assert session["network"] == "egress"
    result = await curl(net_system, session, f"http://{WEB}:8080/")
    assert result["exit_code"] == 0, result
    assert f"world {WEB}:8080" in result["output"]
    # Masqueraded: the world saw the host's uplink address, not the session's own.
    assert world.peers == [world.uplink_ip]


async def test_metadata_stand_in_is_unreachable(net_system: System, world: World) -> None:
    assert b"world 169.254.169.254:80" in await connect_inside(world.name, METADATA, 80)  # it is up
    world.peers.clear()
    session = await new_session(net_system)
    assert (await probe(net_system, session, METADATA, 80)).startswith("blocked")
    allowed = await new_session(net_system, egress_allow=[{"cidr": "169.254.0.0/16"}])
    assert (await probe(net_system, allowed, METADATA, 80)).startswith("blocked")
    assert world.peers == []


async def test_private_networks_are_unreachable_by_default(net_system: System, world: World) -> None:
    for address in (LAN, CGNAT):
        assert f"world {address}:80".encode() in await connect_inside(world.name, address, 80)  # it is up
    world.peers.clear()
    session = await new_session(net_system)
    asked = await new_session(net_system, egress_allow=[{"cidr": "192.168.0.0/16"}, {"cidr": "100.64.0.0/10"}])
    for address in (LAN, CGNAT):
        assert (await probe(net_system, session, address, 80)).startswith("blocked"), address
        assert (await probe(net_system, asked, address, 80)).startswith("blocked"), address
    assert world.peers == []


async def test_an_allowed_private_range_is_reachable_and_allow_lists_narrow_it(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, world: World
) -> None:
    network = network_settings(uplink=world.name, uplink_gateway=world.gateway, allowed=["192.168.77.0/24"])
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", agent_overrides={"network": network}
    )
    try:
        session = await new_session(system)
        assert await probe(system, session, LAN, 80) == "open"
        assert (await probe(system, session, CGNAT, 80)).startswith("blocked")
        narrowed = await new_session(system, egress_allow=[{"cidr": f"{WEB}/32"}])
        assert (await probe(system, narrowed, LAN, 80)).startswith("blocked")
    finally:
        await stop_system(system)


async def test_sessions_cannot_reach_each_other(net_system: System) -> None:
    a, b = await new_session(net_system), await new_session(net_system)
    b_address = address_of(b, net_system)["address"]
    serve = "nohup python3 -m http.server 8000 >/dev/null 2>&1 & sleep 1; echo started"
    assert (await run(net_system, b, serve))["output"].strip() == "started"
    assert await probe(net_system, b, b_address, 8000) == "open"  # B's server is up
    assert (await probe(net_system, a, b_address, 8000)).startswith("blocked")
    # The host may open connections to a session (port forwarding does), a session to another: no.
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(b_address, 8000)
        await stream.aclose()


async def test_host_and_its_services_are_unreachable(net_system: System, world: World) -> None:
    session = await new_session(net_system)
    gateway = address_of(session, net_system)["gateway"]
    agent_port = httpx.URL(net_system.agent.url).port
    scheduler_port = httpx.URL(net_system.api_url).port
    assert agent_port is not None and scheduler_port is not None
    # A host server on every address a session might try, shown to be up from the host.
    listeners = []
    for address in ("127.0.0.1", gateway, world.uplink_ip):
        sock = trio.socket.socket()
        await sock.bind((address, 0 if not listeners else listeners[0].getsockname()[1]))
        sock.listen()
        listeners.append(sock)
    port = listeners[0].getsockname()[1]
    try:
        for address in ("127.0.0.1", gateway, world.uplink_ip):
            stream = await trio.open_tcp_stream(address, port)
            await stream.aclose()
        targets = [(a, p) for a in ("127.0.0.1", gateway, world.uplink_ip) for p in (port, agent_port, scheduler_port)]
        for address, target_port in targets:
            outcome = await probe(net_system, session, address, target_port)
            assert outcome.startswith("blocked"), (address, target_port, outcome)
        result = await curl(net_system, session, f"http://{gateway}:{agent_port}/healthz")
        assert result["exit_code"] != 0
    finally:
        for sock in listeners:
            sock.close()


async def test_network_none_reaches_nothing(net_system: System, world: World) -> None:
    session = await new_session(net_system, network="none")
    assert session["network"] == "none"
    assert (await probe(net_system, session, WEB, 8080)).startswith("blocked")
    # Its own loopback still works.
    serve = "nohup python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 & sleep 1; echo started"
    await run(net_system, session, serve)
    assert await probe(net_system, session, "127.0.0.1", 8000) == "open"
    assert world.peers == []


async def test_allow_list_restricts_egress(net_system: System, world: World) -> None:
    session = await new_session(net_system, egress_allow=[{"cidr": f"{WEB}/32", "ports": [8080]}])
    assert session["egress_allow"] == [{"cidr": f"{WEB}/32", "ports": [8080]}]
    assert await probe(net_system, session, WEB, 8080) == "open"
    assert (await probe(net_system, session, WEB, 8081)).startswith("blocked")
    assert (await probe(net_system, session, OTHER_WEB, 8080)).startswith("blocked")
    whole_net = await new_session(net_system, egress_allow=[{"cidr": "203.0.113.0/24"}])
    assert await probe(net_system, whole_net, OTHER_WEB, 8080) == "open"
    assert await probe(net_system, whole_net, WEB, 8081) == "open"


async def test_one_shot_exec_takes_network_fields(net_system: System) -> None:
    response = await net_system.client.post(
        "/v1/exec",
        json={"ephemeral": True, "network": "none", "command": f"curl -sS --max-time 5 http://{WEB}:8080/"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["exit_code"] != 0


async def test_without_uplink_sessions_get_no_egress(sqlite_system: System) -> None:
    """The default: no uplink configured, no way out, and asking for egress says so."""
    session = await new_session(sqlite_system)
    assert session["network"] == "none"
    response = await sqlite_system.client.post("/v1/sessions", json={"ephemeral": True, "network": "egress"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "no_egress"


async def test_slots_are_reused_after_cool_down(net_system: System) -> None:
    first = await new_session(net_system)
    slot = address_of(first, net_system)["slot"]
    await net_system.client.delete(f"/v1/sessions/{first['id']}")

    async def reused() -> bool:
        # Past the cool-down the rested slot is on top of the pool; sooner, a
        # create gets another one and the rhythm can keep missing it.
        await trio.sleep(2 * net_system.agent.config.network.cooldown)
        session = await new_session(net_system)
        again = address_of(session, net_system)["slot"] == slot
        await net_system.client.delete(f"/v1/sessions/{session['id']}")
        return bool(again)

    await wait_until(reused, timeout=30)


async def test_agent_removes_network_debris_at_start_and_all_it_made_at_stop(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path
) -> None:
    """Left over by a crash: a slot and a stale firewall table; the next start clears them."""
    network = network_settings(pool_size=1)
    plan = SlotPlan(network["prefix"], IPv4Network(network["subnet"]))
    await trio.to_thread.run_sync(links.create_slot, plan.slot(7))
    stale = f"table inet {network['prefix']} {{\n chain forward {{\n type filter hook forward priority 0;\n }}\n}}\n"
    await trio.run_process(["nft", "-f", "-"], stdin=stale.encode())
    system = await start_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", agent_overrides={"network": network}
    )
    try:
        assert plan.slot(7).name not in (await network_debris(system.agent.config))
        session = await new_session(system)
        assert address_of(session, system)["netns"].startswith(f"/run/netns/{network['prefix']}-")
    finally:
        await stop_system(system)  # checks that nothing of the agent's network remains
    assert await network_debris(system.agent.config) == []
