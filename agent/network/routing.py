"""Policy routing that sends sessions' traffic out of the uplink and nowhere else (blocking).

Sessions' packets are routed by their own table, not the host's main one:
``from <subnet> lookup <table>``, where the table holds a default route via
the uplink (when one is configured) and, behind it, an ``unreachable``
default, so that a session's packet never falls through to the host's own
default route, whatever happens to the uplink. A rule just before it keeps
traffic *to* the subnet (host to session, and replies) on the main table.
"""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv4Network

from pyroute2 import IPRoute, NetlinkError

from agent.network.links import write_sysctl

MAIN_TABLE = 254
# Rule priorities: after the local table (0), before main (32766).
RULE_PRIORITY = 1000
_LAST_RESORT_METRIC = 0xFFFFFFFF


def uplink_gateway(ipr: IPRoute, uplink_index: int) -> str | None:
    """The main table's default gateway through the uplink, if it has one."""
    for route in ipr.get_routes(family=2, table=MAIN_TABLE, dst_len=0):
        if route.get("oif") == uplink_index and route.get("gateway"):
            return str(route.get("gateway"))
    return None


def install(subnet: IPv4Network, table: int, uplink: str | None, gateway: IPv4Address | None) -> None:
    """Add the rules and the sessions' table (after removing any left by a previous run)."""
    remove(subnet, table)
    with IPRoute() as ipr:
        ipr.route("add", dst="0.0.0.0/0", table=table, type="unreachable", priority=_LAST_RESORT_METRIC)
        if uplink is not None:
            found = ipr.link_lookup(ifname=uplink)
            if not found:
                raise ValueError(f"uplink interface {uplink!r} does not exist")
            (index,) = found
            # Replies to sessions come in on the uplink and are forwarded on.
            write_sysctl(f"net/ipv4/conf/{uplink}/forwarding", "1")
            via = str(gateway) if gateway is not None else uplink_gateway(ipr, index)
            if via is None:
                ipr.route("add", dst="0.0.0.0/0", table=table, oif=index)
            else:
                ipr.route("add", dst="0.0.0.0/0", table=table, oif=index, gateway=via)
        net, bits = str(subnet.network_address), subnet.prefixlen
        ipr.rule("add", family=2, dst=net, dst_len=bits, table=MAIN_TABLE, priority=RULE_PRIORITY)
        ipr.rule("add", family=2, src=net, src_len=bits, table=table, priority=RULE_PRIORITY + 1)


def remove(subnet: IPv4Network, table: int) -> None:
    """Remove this agent's rules and empty its table; idempotent."""
    net, bits = str(subnet.network_address), subnet.prefixlen
    with IPRoute() as ipr:
        for rule in ipr.get_rules(family=2):
            ours = rule.get("table") == table or (
                rule.get("priority") == RULE_PRIORITY and rule.get("dst") == net and rule["dst_len"] == bits
            )
            if ours:
                with contextlib.suppress(NetlinkError):
                    ipr.rule("del", **_rule_selector(rule))
        for route in ipr.get_routes(family=2, table=table):
            with contextlib.suppress(NetlinkError):
                ipr.route("del", table=table, dst="0.0.0.0/0", type=route["type"], priority=route.get("priority"))


def _rule_selector(rule: object) -> dict[str, object]:
    get = rule.get  # type: ignore[attr-defined]
    selector: dict[str, object] = {"family": 2, "table": get("table"), "priority": get("priority")}
    if get("src"):
        selector.update(src=get("src"), src_len=rule["src_len"])  # type: ignore[index]
    if get("dst"):
        selector.update(dst=get("dst"), dst_len=rule["dst_len"])  # type: ignore[index]
    return selector
