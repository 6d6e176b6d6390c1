"""The agent's nftables table: sessions reach the uplink, under their policy, and nothing else.

One ``inet`` table per agent, named after its prefix, holds everything:

Forbidden packets from a session are rejected (it learns at once that it
may not), packets towards a session dropped.

* input: a session may answer the host, never open a connection to it
  (no host address, port or service, whatever the route);
* forward: nothing new reaches a session from outside or from another
  session; a session's packet may leave only through the uplink, never to a
  blocked destination (link-local metadata, the sessions' subnet, ...), and
  only as its policy allows: everything (``egress_all``), some networks
  (``allow_net``) or some ports of some networks (``allow_port``), keyed by
  the session's address (spoofing is stopped by reverse-path filtering);
  private and shared (CGNAT) networks are blocked unless the operator
  allows a range (``allowed``): they hold the data centre's other hosts,
  its databases and metadata services a session has no business with. A
  session's allow-list only narrows: it cannot open a blocked range. Only
  IPv4 leaves at all, so ULA and link-local IPv6 are refused too;
* postrouting: what leaves through the uplink is masqueraded.

Base chains of other tables see the same packets and may drop them too;
this table only adds drops for its own interfaces, so agents (and the
host's own firewall) do not interfere. Rules are written in nft's own
syntax and loaded with ``nft -f -``, each change one atomic transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, collapse_addresses

import trio

from chaser.wire.isolation import EgressRule

# Never reachable from a session, whatever its allow-list says.
ALWAYS_BLOCKED = (
    IPv4Network("0.0.0.0/8"),
    IPv4Network("127.0.0.0/8"),
    IPv4Network("169.254.0.0/16"),  # link-local: cloud metadata services
    IPv4Network("224.0.0.0/4"),
    IPv4Network("240.0.0.0/4"),
)
# Not reachable from a session unless the operator allows a range of them.
PRIVATE = (
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
    IPv4Network("100.64.0.0/10"),  # shared address space (CGNAT)
)
_PROTOCOLS = ("tcp", "udp")
# What a session's forbidden packet gets: an immediate "administratively
# prohibited", so a tool inside fails at once instead of waiting on timeouts.
_REFUSE = "reject with icmpx type admin-prohibited"


class FirewallError(Exception):
    """nft refused a change; the message is nft's."""


def ruleset(
    table: str,
    wildcard: str,
    subnet: IPv4Network,
    uplink: str | None,
    blocked: Iterable[IPv4Network],
    allowed: Iterable[IPv4Network] = (),
) -> str:
    """The whole table, replacing any previous version of it atomically."""
    private = _without(PRIVATE, list(allowed))
    blocked_elements = ", ".join(str(n) for n in _merged([*ALWAYS_BLOCKED, subnet, *private, *blocked]))
    if uplink is None:
        leave = f'iifname "{wildcard}" {_REFUSE}'
        nat = ""
    else:
        leave = f'iifname "{wildcard}" oifname != "{uplink}" {_REFUSE}'
        nat = f"""
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname "{uplink}" masquerade
  }}"""
    return f"""\
table inet {table}
delete table inet {table}
table inet {table} {{
  set blocked {{ type ipv4_addr; flags interval; elements = {{ {blocked_elements} }} }}
  set egress_all {{ type ipv4_addr; }}
  set allow_net {{ type ipv4_addr . ipv4_addr; flags interval; }}
  set allow_port {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags interval; }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{wildcard}" ct state established,related accept
    iifname "{wildcard}" {_REFUSE}
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    oifname "{wildcard}" ct state established,related accept
    oifname "{wildcard}" drop
    {leave}
    iifname "{wildcard}" meta nfproto != ipv4 {_REFUSE}
    iifname "{wildcard}" ip daddr @blocked {_REFUSE}
    iifname "{wildcard}" ip saddr @egress_all accept
    iifname "{wildcard}" ip saddr . ip daddr @allow_net accept
    iifname "{wildcard}" ip saddr . ip daddr . meta l4proto . th dport @allow_port accept
    iifname "{wildcard}" {_REFUSE}
  }}{nat}
}}
"""


def _merged(networks: Iterable[IPv4Network]) -> list[IPv4Network]:
    """Overlapping networks collapsed: an interval set refuses overlapping elements."""
    return list(collapse_addresses(networks))


def _without(networks: Iterable[IPv4Network], holes: Sequence[IPv4Network]) -> list[IPv4Network]:
    """``networks`` with every address of ``holes`` taken out."""
    remaining = list(networks)
    for hole in holes:
        cut: list[IPv4Network] = []
        for network in remaining:
            if hole.supernet_of(network):
                continue
            cut.extend(network.address_exclude(hole) if network.supernet_of(hole) else [network])
        remaining = cut
    return remaining


def policy_elements(address: IPv4Address, mode: str, allow: Sequence[EgressRule] | None) -> list[tuple[str, str]]:
    """(set, element) pairs that grant ``address`` its egress policy."""
    if mode == "none":
        return []
    if not allow:
        return [("egress_all", str(address))]
    elements = []
    for rule in allow:
        if rule.ports is None:
            elements.append(("allow_net", f"{address} . {rule.cidr}"))
        else:
            elements.extend(
                ("allow_port", f"{address} . {rule.cidr} . {proto} . {port}")
                for port in rule.ports
                for proto in _PROTOCOLS
            )
    return elements


def element_commands(verb: str, table: str, elements: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{verb} element inet {table} {name} {{ {value} }}\n" for name, value in elements)


async def apply(script: str) -> None:
    """Load ``script`` with ``nft -f -`` as one transaction."""
    if not script:
        return
    done = await trio.run_process(
        ["nft", "-f", "-"], stdin=script.encode(), capture_stdout=True, capture_stderr=True, check=False
    )
    if done.returncode != 0:
        raise FirewallError(done.stderr.decode(errors="replace").strip())


def removal(table: str) -> str:
    """A script deleting the table, whether or not it exists."""
    return f"table inet {table}\ndelete table inet {table}\n"
