"""A VM's NIC in its session's network slot: a tap bridged to the slot's ``eth0``.

A slot (see ``agent.network``) is a namespace whose ``eth0`` holds the
session's address, behind the host's firewall rules for that address. A
container runs in the namespace and uses ``eth0`` as it is. A VM's guest
must own the address itself, so the slot is turned into a wire: ``eth0``
gives up its address and joins a bridge with a tap, QEMU (started inside
the namespace) opens the tap, and the guest configures the address and
gateway on its NIC (told in the guest channel's hello). The host sees the
same address on the same veth, so the same isolation and egress rules
apply. ``release`` puts the slot back as it was, for its next tenant.

The tap is persistent: it outlives a QEMU that pauses, and goes with the
slot's namespace if the agent dies. Each launch makes it again, owned by the
uid that launch's QEMU runs as (``plug``): an unprivileged process may open
only a tap that is its own.
"""

from __future__ import annotations

from pathlib import Path

import trio

from agent.network.addressing import GUEST_IFNAME
from agent.runtimes.base import GuestNetwork, RuntimeFailure

TAP = "tap0"
BRIDGE = "br0"
# Every VM's NIC has this address: one VM per namespace, and a fork or a
# warm start restores a NIC saved with it.
MAC = "52:54:00:c5:a5:01"
_TIMEOUT = 30.0


async def _ip_batch(netns: Path, commands: list[str], *, force: bool = False) -> None:
    """Run ``ip`` commands inside the namespace; with ``force``, go on past failures."""
    argv = ["ip", "-netns", netns.name, *(["-force"] if force else []), "-batch", "-"]
    with trio.fail_after(_TIMEOUT):
        done = await trio.run_process(
            argv, stdin="\n".join(commands).encode() + b"\n", capture_stdout=True, capture_stderr=True, check=False
        )
    if done.returncode != 0 and not force:
        raise RuntimeFailure(f"cannot wire the VM into its network: {done.stderr.decode(errors='replace').strip()}")


async def wire(netns: Path) -> None:
    """Make a bridge of the slot's ``eth0``, which gives up its address to the guest."""
    await _ip_batch(
        netns,
        [
            f"link add {BRIDGE} type bridge",
            f"address flush dev {GUEST_IFNAME}",
            f"link set {GUEST_IFNAME} master {BRIDGE}",
            f"link set {BRIDGE} up",
        ],
    )


async def plug(netns: Path, uid: int) -> None:
    """(Re)make the tap on the bridge, for a QEMU running as ``uid`` to open."""
    await _ip_batch(netns, [f"tuntap del dev {TAP} mode tap"], force=True)
    await _ip_batch(
        netns,
        [
            f"tuntap add dev {TAP} mode tap user {uid} group {uid}",
            f"link set {TAP} master {BRIDGE}",
            f"link set {TAP} up",
        ],
    )


async def release(netns: Path, network: GuestNetwork) -> None:
    """Remove tap and bridge and give ``eth0`` its address and route back; idempotent."""
    if not netns.exists():
        return
    await _ip_batch(netns, [f"link del {TAP}", f"link del {BRIDGE}"], force=True)
    await _ip_batch(
        netns,
        [
            f"address replace {network.address} dev {GUEST_IFNAME}",
            f"route replace default via {network.gateway} dev {GUEST_IFNAME}",
        ],
    )
