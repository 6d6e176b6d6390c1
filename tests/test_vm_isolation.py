"""A VM session's network is its session's slot: the same isolation and egress rules as a container's.

The guest's NIC is bridged to the slot's veth and holds the slot's address,
so the host's rules for that address must hold for it as they do for a
container (``test_isolation.py``): out to the test-made world through NAT,
nowhere else; no other session, no host address, no metadata stand-in; an
allow-list narrows egress, ``network: "none"`` closes it. Three VMs, booted
together, share one test: each TCG boot costs seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import VM_AGENT, System, network_settings, start_system, stop_system, wait_until
from tests.test_isolation import address_of, curl, new_session, probe, run
from tests.world import METADATA, OTHER_WEB, WEB, World, open_world

VM_IMAGE = "debian:bookworm-vm"


async def serve(system: System, session: dict[str, Any], address: str) -> None:
    """An HTTP server on ``address``:8000 in the session, once it answers there (Python starts slowly under TCG)."""
    await run(system, session, f"nohup python3 -m http.server 8000 --bind {address} >/dev/null 2>&1 &")

    async def up() -> bool:
        return await probe(system, session, address, 8000) == "open"

    await wait_until(up, timeout=60)


@pytest.fixture
async def world(nursery: trio.Nursery) -> AsyncIterator[World]:
    async with open_world([(WEB, 8080), (WEB, 8081), (OTHER_WEB, 8080), (METADATA, 80)]) as made:
        yield made


@pytest.fixture
async def vm_net_system(
    nursery: trio.Nursery, tmp_path: Path, vm_images_dir: Path, world: World
) -> AsyncIterator[System]:
    network = network_settings(uplink=world.name, uplink_gateway=world.gateway, pool_size=3)
    system = await start_system(
        nursery,
        tmp_path,
        vm_images_dir,
        f"sqlite:///{tmp_path / 'db'}",
        agent_overrides={**VM_AGENT, "network": network},
    )
    try:
        yield system
    finally:
        await stop_system(system)  # no slot, tap, bridge or rule of the agent left


async def test_vm_sessions_are_isolated_like_containers(vm_net_system: System, world: World) -> None:
    system = vm_net_system
    made: dict[str, dict[str, Any]] = {}

    async def make(name: str, fields: dict[str, Any]) -> None:
        made[name] = await new_session(system, image=VM_IMAGE, **fields)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(make, "open", {})
        nursery.start_soon(make, "allowed", {"egress_allow": [{"cidr": f"{WEB}/32", "ports": [8080]}]})
        nursery.start_soon(make, "closed", {"network": "none"})
    vm, allowed, closed = made["open"], made["allowed"], made["closed"]
    assert (vm["network"], allowed["network"], closed["network"]) == ("egress", "egress", "none")

    # The guest holds its slot's address itself.
    own = address_of(vm, system)
    shown = await run(system, vm, "/run/chaser/busybox ip -4 -o addr show eth0")
    assert f"inet {own['address']}/30" in shown["output"]

    # Out to the world, masqueraded.
    result = await curl(system, vm, f"http://{WEB}:8080/")
    assert result["exit_code"] == 0, result
    assert f"world {WEB}:8080" in result["output"]
    assert world.peers == [world.uplink_ip]

    # Not the metadata stand-in, not the host on any address (its gateway, the uplink), not the agent.
    agent_port = httpx.URL(system.agent.url).port
    assert agent_port is not None
    listener = trio.socket.socket()
    await listener.bind((own["gateway"], 0))
    listener.listen()
    try:
        port = listener.getsockname()[1]
        with trio.fail_after(10):
            await (await trio.open_tcp_stream(own["gateway"], port)).aclose()  # it is up
        for address, target in ((METADATA, 80), (own["gateway"], port), (own["gateway"], agent_port)):
            assert (await probe(system, vm, address, target)).startswith("blocked"), (address, target)
        assert (await probe(system, vm, world.uplink_ip, agent_port)).startswith("blocked")
    finally:
        listener.close()

    # Not another session: a server in one VM is open to itself and to the host, not to the other VM.
    other = address_of(allowed, system)["address"]
    await serve(system, allowed, other)
    with trio.fail_after(10):
        await (await trio.open_tcp_stream(other, 8000)).aclose()
    assert (await probe(system, vm, other, 8000)).startswith("blocked")

    # The allow-list holds: one address, one port.
    assert await probe(system, allowed, WEB, 8080) == "open"
    assert (await probe(system, allowed, WEB, 8081)).startswith("blocked")
    assert (await probe(system, allowed, OTHER_WEB, 8080)).startswith("blocked")

    # network "none": nothing, though its own loopback works.
    peers = list(world.peers)
    assert (await probe(system, closed, WEB, 8080)).startswith("blocked")
    await serve(system, closed, "127.0.0.1")
    assert world.peers == peers

    for session in (vm, allowed, closed):
        await system.client.delete(f"/v1/sessions/{session['id']}")
    # The slot is as it was, for its next tenant: eth0 has the address back, tap and bridge are gone.
    slot = Path(own["netns"]).name
    links = await trio.run_process(["ip", "-netns", slot, "-o", "link"], capture_stdout=True)
    assert "tap0" not in links.stdout.decode() and "br0" not in links.stdout.decode()
    addresses = await trio.run_process(["ip", "-netns", slot, "-o", "-4", "addr", "show", "eth0"], capture_stdout=True)
    assert f"inet {own['address']}/30" in addresses.stdout.decode()
    routes = await trio.run_process(["ip", "-netns", slot, "route"], capture_stdout=True)
    assert f"default via {own['gateway']}" in routes.stdout.decode()
