"""A pool of ready network slots, leased to sandboxes and reused after a cool-down.

Creating a network namespace is slow and serialized by the kernel, so
slots (netns + veth + addresses, see ``links``) are made ahead by a
background task and handed out by ``acquire``; when the pool is empty a
create makes its slot itself. A released slot rests for ``cooldown``
seconds, its conntrack entries are dropped, and it is handed out again.

The pool also owns the agent's routing rules and nftables table: a lease is
two things, a slot and the firewall elements granting its policy. On start
it removes whatever a previous run left (except the slots of re-adopted
sandboxes); on exit it removes everything it made (or, for a host service
whose sandboxes outlive it, everything no running sandbox uses).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

import trio
from pyroute2 import IPRoute

from agent.config import NetworkConfig
from agent.network import firewall, links, routing
from agent.network.addressing import SlotAddress, SlotPlan
from chaser.wire import errors
from chaser.wire.isolation import EgressRule

log = logging.getLogger(__name__)


@dataclass
class Lease:
    """A slot held by one sandbox, with the policy it was granted."""

    sandbox_id: str
    slot: SlotAddress
    mode: str
    egress_allow: list[EgressRule] | None
    elements: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "slot": self.slot.index,
            "netns": str(self.slot.netns_path),
            "address": str(self.slot.guest_ip),
            "gateway": str(self.slot.host_ip),
            "mode": self.mode,
            "egress_allow": [r.model_dump() for r in self.egress_allow] if self.egress_allow else None,
        }


def _overlapping_routes(subnet: IPv4Network, is_own: Callable[[str], int | None]) -> list[str]:
    """Main-table routes into ``subnet`` through interfaces that are not ours."""
    found = []
    with IPRoute() as ipr:
        names = {link["index"]: str(link.get("ifname")) for link in ipr.get_links()}
        for route in ipr.get_routes(family=2, table=routing.MAIN_TABLE):
            dst = route.get("dst")
            if dst is None:
                continue
            network = IPv4Network(f"{dst}/{route['dst_len']}", strict=False)
            ifname = names.get(route.get("oif"), "?")
            if network.overlaps(subnet) and is_own(ifname) is None:
                found.append(f"{network} dev {ifname}")
    return found


class SlotPool:
    def __init__(self, config: NetworkConfig, *, remove_on_exit: bool) -> None:
        self.config = config
        self.plan = SlotPlan(config.prefix, config.subnet)
        self.table = config.prefix
        self.remove_on_exit = remove_on_exit
        self._made: set[int] = set()  # every slot that exists on the host
        self._free: list[SlotAddress] = []
        self._cooling: list[tuple[float, SlotAddress]] = []
        self._leases: dict[str, Lease] = {}
        self._retired: set[int] = set()  # slots whose firewall state is unknown: never reused
        self._kernel = trio.CapacityLimiter(1)  # netns creation is serialized anyway
        self._wake = trio.Event()

    @property
    def egress(self) -> bool:
        """Whether sessions here can reach anything outside at all."""
        return self.config.uplink is not None

    # -- lifecycle ---------------------------------------------------------

    @asynccontextmanager
    async def running(self, adopted: Sequence[Lease] = ()) -> AsyncIterator[SlotPool]:
        """Set up routing and firewall, keep the pool filled; tear down on exit."""
        try:
            await self._start(adopted)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._refill_forever)
                try:
                    yield self
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._stop()

    async def _start(self, adopted: Sequence[Lease]) -> None:
        keep = {lease.slot.index for lease in adopted}
        for lease in adopted:
            lease.elements = firewall.policy_elements(lease.slot.guest_ip, lease.mode, lease.egress_allow)
            self._leases[lease.sandbox_id] = lease
        self._made |= keep
        await trio.to_thread.run_sync(self._start_sync, keep)
        script = firewall.ruleset(
            self.table,
            self.plan.wildcard,
            self.config.subnet,
            self.config.uplink,
            self.config.blocked,
            self.config.allowed,
        )
        for lease in adopted:
            script += firewall.element_commands("add", self.table, lease.elements)
        await firewall.apply(script)

    def _start_sync(self, keep: set[int]) -> None:
        namespaces, host_links = links.own_objects(self.plan.index_of)
        for name in namespaces | host_links:
            if self.plan.index_of(name) not in keep:
                log.info("removing network debris %s", name)
                links.remove_slot(name)
        conflicts = _overlapping_routes(self.config.subnet, self.plan.index_of)
        if conflicts:
            raise ValueError(f"network.subnet {self.config.subnet} overlaps routes of this host: {conflicts}")
        routing.install(self.config.subnet, self.config.route_table, self.config.uplink, self.config.uplink_gateway)

    async def _stop(self) -> None:
        in_use = {lease.slot.index for lease in self._leases.values()}
        doomed = set(self._made) if self.remove_on_exit else self._made - in_use
        for index in sorted(doomed):
            await trio.to_thread.run_sync(links.remove_slot, self.plan.slot(index).name)
            self._made.discard(index)
        self._free.clear()
        self._cooling.clear()
        if self.remove_on_exit:
            self._leases.clear()
            await trio.to_thread.run_sync(routing.remove, self.config.subnet, self.config.route_table)
            await firewall.apply(firewall.removal(self.table))

    async def _refill_forever(self) -> None:
        while True:
            now = trio.current_time()
            rested = [slot for until, slot in self._cooling if until <= now]
            self._cooling = [(until, slot) for until, slot in self._cooling if until > now]
            for slot in rested:
                await trio.to_thread.run_sync(links.forget_connections, str(slot.guest_ip))
                self._free.append(slot)
            while len(self._free) + len(self._cooling) < self.config.pool_size and self._next_index() is not None:
                try:
                    self._free.append(await self._create())
                except Exception:
                    log.exception("could not make a network slot; retrying later")
                    break
            next_rest = min((until for until, _ in self._cooling), default=math.inf)
            with trio.move_on_at(next_rest):
                await self._wake.wait()
            self._wake = trio.Event()

    def _next_index(self) -> int | None:
        for index in range(self.plan.capacity):
            if index not in self._made and index not in self._retired:
                return index
        return None

    async def _create(self) -> SlotAddress:
        index = self._next_index()
        if index is None:
            raise errors.Unavailable(f"no address left in {self.config.subnet}", code="no_capacity")
        slot = self.plan.slot(index)
        # Booked before the thread runs: if we are cancelled meanwhile, exit still removes it.
        self._made.add(index)
        async with self._kernel:
            try:
                await trio.to_thread.run_sync(links.create_slot, slot)
            except BaseException:
                self._made.discard(index)
                raise
        return slot

    # -- leases ------------------------------------------------------------

    async def acquire(self, sandbox_id: str, mode: str, egress_allow: list[EgressRule] | None) -> Lease:
        """A slot for ``sandbox_id`` with its policy in force; from the pool, else made now."""
        slot = self._free.pop() if self._free else await self._create()
        lease = Lease(sandbox_id, slot, mode, egress_allow)
        lease.elements = firewall.policy_elements(slot.guest_ip, mode, egress_allow)
        self._leases[sandbox_id] = lease
        self._wake.set()
        try:
            await firewall.apply(firewall.element_commands("add", self.table, lease.elements))
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.release(sandbox_id)
            raise
        return lease

    async def transfer(self, old_id: str, sandbox_id: str, mode: str, egress_allow: list[EgressRule] | None) -> Lease:
        """Hand ``old_id``'s lease (a container started ahead, granted nothing) to
        ``sandbox_id``, with that sandbox's policy in force."""
        lease = self._leases.pop(old_id)
        if lease.elements:
            raise ValueError(f"the lease of {old_id} grants a policy already; only a bare lease moves")
        lease.sandbox_id, lease.mode, lease.egress_allow = sandbox_id, mode, egress_allow
        self._leases[sandbox_id] = lease
        elements = firewall.policy_elements(lease.slot.guest_ip, mode, egress_allow)
        await firewall.apply(firewall.element_commands("add", self.table, elements))
        lease.elements = elements
        return lease

    async def release(self, sandbox_id: str) -> None:
        """Revoke the sandbox's policy and let its slot rest; call once nothing runs in it."""
        lease = self._leases.pop(sandbox_id, None)
        if lease is None:
            return
        try:
            await firewall.apply(firewall.element_commands("delete", self.table, lease.elements))
        except firewall.FirewallError as exc:
            # Its address might keep rights it should not: never hand it out again.
            log.error("could not revoke the policy of slot %s (%s); retiring it", lease.slot.name, exc)
            self._retired.add(lease.slot.index)
            await trio.to_thread.run_sync(links.remove_slot, lease.slot.name)
            self._made.discard(lease.slot.index)
            return
        self._cooling.append((trio.current_time() + self.config.cooldown, lease.slot))
        self._wake.set()


def lease_from_json(plan: SlotPlan, sandbox_id: str, data: Mapping[str, Any]) -> Lease:
    """A lease as recorded by ``Lease.to_json`` (for re-adoption after a restart)."""
    allow = data.get("egress_allow")
    return Lease(
        sandbox_id=sandbox_id,
        slot=plan.slot(int(data["slot"])),
        mode=str(data["mode"]),
        egress_allow=[EgressRule(**r) for r in allow] if allow else None,
    )
