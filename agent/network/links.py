"""Making and removing one slot's netns and veth with pyroute2 (blocking: call from a thread).

A slot is a network namespace with ``lo`` up and a veth whose session end,
``eth0``, holds the session's address and a default route to the host end.
The host end forwards (per interface: the host's global ``ip_forward`` is
left alone), filters spoofed sources (strict reverse-path filter) and has no
IPv6, so there is no link-local address a session could use to reach the host.

Nothing here forks a Python child: pyroute2's ``netns.create`` and
``IPRoute(netns=...)`` do, and in this threaded process such a child can
deadlock on a lock another thread held at the fork (a slot, and with it
the agent's start or shutdown, then hangs for good). The namespace is made
by ``ip netns add`` (fork and exec, no Python in the child), and configured
through a netlink socket opened from inside it by this thread.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError, netns
from pyroute2.conntrack import Conntrack, NFCTAttrTuple

from agent.network.addressing import GUEST_IFNAME, NETNS_DIR, SLOT_PREFIXLEN, SlotAddress
from agent.network.netns import entered_path

_LOOPBACK_INDEX = 1


def write_sysctl(path: str, value: str) -> None:
    Path("/proc/sys", path).write_text(value)


def host_interface_sysctls(ifname: str) -> None:
    """Forward for this interface only, drop spoofed sources, no IPv6."""
    write_sysctl(f"net/ipv4/conf/{ifname}/forwarding", "1")
    write_sysctl(f"net/ipv4/conf/{ifname}/rp_filter", "1")
    write_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "1")


def create_slot(slot: SlotAddress) -> None:
    """Create the slot's netns and veth; on any failure remove what was made."""
    made = subprocess.run(["ip", "netns", "add", slot.name], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise OSError(f"ip netns add {slot.name}: {made.stderr.strip()}")
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=slot.name, kind="veth", peer={"ifname": GUEST_IFNAME, "net_ns_fd": slot.name})
            (index,) = ipr.link_lookup(ifname=slot.name)
            host_interface_sysctls(slot.name)
            ipr.addr("add", index=index, address=str(slot.host_ip), prefixlen=SLOT_PREFIXLEN)
            ipr.link("set", index=index, state="up")
        with entered_path(slot.netns_path):
            inside = IPRoute()
        with inside:
            inside.link("set", index=_LOOPBACK_INDEX, state="up")
            (eth,) = inside.link_lookup(ifname=GUEST_IFNAME)
            inside.addr("add", index=eth, address=str(slot.guest_ip), prefixlen=SLOT_PREFIXLEN)
            inside.link("set", index=eth, state="up")
            inside.route("add", dst="0.0.0.0/0", gateway=str(slot.host_ip))
    except BaseException:
        remove_slot(slot.name)
        raise


def remove_slot(name: str) -> None:
    """Remove the veth (both ends) and the netns named ``name``; idempotent."""
    with IPRoute() as ipr, contextlib.suppress(NetlinkError, ValueError):
        (index,) = ipr.link_lookup(ifname=name)
        ipr.link("del", index=index)
    path = NETNS_DIR / name
    if path.exists():
        netns.remove(name)


def own_objects(index_of: Callable[[str], int | None]) -> tuple[set[str], set[str]]:
    """Names of this agent's netns and host-side links present now (see ``SlotPlan.index_of``)."""
    namespaces = {n for n in os.listdir(NETNS_DIR) if index_of(n) is not None} if NETNS_DIR.exists() else set()
    with IPRoute() as ipr:
        links = {str(link.get("ifname")) for link in ipr.get_links()}
    return namespaces, {n for n in links if index_of(n) is not None}


def forget_connections(address: str) -> None:
    """Drop the host's conntrack entries of ``address``, so a reused slot inherits no flow."""
    with Conntrack() as ct:
        for field in ("saddr", "daddr"):
            for entry in list(ct.dump_entries(tuple_orig=NFCTAttrTuple(**{field: address}))):
                with contextlib.suppress(NetlinkError):
                    ct.delete(entry)
