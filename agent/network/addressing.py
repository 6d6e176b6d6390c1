"""Names and addresses of network slots: pure arithmetic, no I/O.

Slot ``i`` of an agent owns the ``i``-th /30 of the agent's subnet: the
host end of its veth takes the first address, the session the second. Every
object of slot ``i`` is named ``<prefix>-<i>`` (the netns, and the veth's
host end), so an agent recognises what it made, and leaves alone what other
agents on the same host made under other prefixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

NETNS_DIR = Path("/run/netns")
# The session's end of the veth, inside its namespace.
GUEST_IFNAME = "eth0"
SLOT_PREFIXLEN = 30
# Linux interface names hold 15 characters: prefix, "-", up to 6 digits.
PREFIX_PATTERN = r"^[a-z][a-z0-9]{0,7}$"


@dataclass(frozen=True)
class SlotAddress:
    index: int
    name: str  # of the netns and of the host end of the veth
    host_ip: IPv4Address  # the session's gateway
    guest_ip: IPv4Address  # the session's own address

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.name


class SlotPlan:
    """Maps slot indexes to names and addresses within one agent's subnet."""

    def __init__(self, prefix: str, subnet: IPv4Network) -> None:
        if not re.match(PREFIX_PATTERN, prefix):
            raise ValueError(f"network prefix {prefix!r} must match {PREFIX_PATTERN}")
        if subnet.prefixlen > SLOT_PREFIXLEN:
            raise ValueError(f"subnet {subnet} is too small for even one /{SLOT_PREFIXLEN} slot")
        self.prefix = prefix
        self.subnet = subnet
        self.capacity = min(subnet.num_addresses >> (32 - SLOT_PREFIXLEN), 999_999)
        self._own_name = re.compile(rf"^{re.escape(prefix)}-(\d+)$")

    def slot(self, index: int) -> SlotAddress:
        if not 0 <= index < self.capacity:
            raise ValueError(f"slot {index} is outside {self.subnet}")
        base = int(self.subnet.network_address) + (index << (32 - SLOT_PREFIXLEN))
        return SlotAddress(
            index=index,
            name=f"{self.prefix}-{index}",
            host_ip=IPv4Address(base + 1),
            guest_ip=IPv4Address(base + 2),
        )

    def index_of(self, name: str) -> int | None:
        """The slot index if ``name`` is one of this agent's objects, else None."""
        match = self._own_name.match(name)
        return int(match.group(1)) if match else None

    @property
    def wildcard(self) -> str:
        """An nftables interface-name pattern matching every host end of this agent."""
        return f"{self.prefix}-*"
