"""The pure parts of isolation: slot addressing, firewall elements, limit resolution (no I/O)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from agent.network.addressing import SlotPlan
from agent.network.firewall import policy_elements, ruleset
from agent.runtimes.limits import lxc_cgroup_lines
from chaser.wire import errors
from chaser.wire.isolation import EgressRule, Limits

pytestmark = pytest.mark.fast


def test_slots_are_disjoint_slash_30s_named_by_prefix() -> None:
    plan = SlotPlan("chaser", IPv4Network("10.203.0.0/16"))
    assert plan.capacity == 16384
    first, last = plan.slot(0), plan.slot(plan.capacity - 1)
    assert (first.name, first.host_ip, first.guest_ip) == (
        "chaser-0",
        IPv4Address("10.203.0.1"),
        IPv4Address("10.203.0.2"),
    )
    assert last.guest_ip == IPv4Address("10.203.255.254")
    assert str(first.netns_path) == "/run/netns/chaser-0"
    with pytest.raises(ValueError):
        plan.slot(plan.capacity)


def test_only_own_names_are_recognised() -> None:
    plan = SlotPlan("ch", IPv4Network("10.0.0.0/24"))
    assert plan.index_of("ch-12") == 12
    assert [plan.index_of(n) for n in ("ch1-12", "ch-", "ch-1x", "xch-1", "eth0")] == [None] * 5


def test_prefixes_that_would_overflow_interface_names_are_refused() -> None:
    for bad in ("toolongprefix", "Upper", "1abc", ""):
        with pytest.raises(ValueError):
            SlotPlan(bad, IPv4Network("10.0.0.0/24"))


def test_policy_elements() -> None:
    address = IPv4Address("10.0.0.2")
    assert policy_elements(address, "none", None) == []
    assert policy_elements(address, "egress", None) == [("egress_all", "10.0.0.2")]
    rules = [EgressRule(cidr="203.0.113.7"), EgressRule(cidr="198.51.100.0/24", ports=[443])]
    assert policy_elements(address, "egress", rules) == [
        ("allow_net", "10.0.0.2 . 203.0.113.7/32"),
        ("allow_port", "10.0.0.2 . 198.51.100.0/24 . tcp . 443"),
        ("allow_port", "10.0.0.2 . 198.51.100.0/24 . udp . 443"),
    ]


def test_ruleset_without_uplink_lets_nothing_out() -> None:
    text = ruleset("t1", "t1-*", IPv4Network("10.0.0.0/24"), None, [IPv4Network("10.0.0.0/8")])
    assert "masquerade" not in text and "oifname !=" not in text
    assert "169.254.0.0/16" in text and "10.0.0.0/8" in text  # the subnet is merged into the blocked /8


def test_limits_resolve_to_defaults_and_refuse_above_maxima() -> None:
    default = Limits(cpus=1.0, memory_mb=1024, pids=512, disk_mb=4096)
    maximum = Limits(cpus=2.0, memory_mb=2048, pids=1024, disk_mb=2048)
    resolved = Limits(memory_mb=256).resolved(default, maximum)
    assert resolved == Limits(cpus=1.0, memory_mb=256, pids=512, disk_mb=2048)  # default capped by the maximum
    with pytest.raises(errors.InvalidInput) as refused:
        Limits(cpus=4.0, pids=4096).resolved(default, maximum)
    assert "cpus 4 is above the maximum 2" in refused.value.message and "pids 4096" in refused.value.message


def test_cgroup_lines_for_each_hierarchy() -> None:
    limits = Limits(cpus=0.5, memory_mb=256, pids=64, disk_mb=100)
    v2 = lxc_cgroup_lines(limits, unified=True)
    assert "lxc.cgroup2.cpu.max = 50000 100000" in v2 and "lxc.cgroup2.pids.max = 64" in v2
    v1 = lxc_cgroup_lines(limits, unified=False)
    assert "lxc.cgroup.cpu.cfs_quota_us = 50000" in v1 and f"lxc.cgroup.memory.limit_in_bytes = {256 << 20}" in v1
