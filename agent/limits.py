"""Turning a session's ``Limits`` into LXC cgroup settings, for cgroup v1 or v2.

LXC writes these keys into the container's own cgroup when it starts, so
the kernel enforces them on everything inside: a memory overrun is an OOM
kill inside the session, a fork bomb hits ``pids.max``, CPU is throttled by
CFS quota. Production hosts use the unified (v2) hierarchy; some hosts
(this development machine) still mount v1 controllers, and LXC ignores
keys of the hierarchy a host does not use, so the right set is chosen here.
(cgroup-utils, once planned for this, only knows v1 and was not used.)
"""

from __future__ import annotations

from pathlib import Path

from chaser.isolation import Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")
_CFS_PERIOD_US = 100_000


def unified_hierarchy(root: Path = CGROUP_ROOT) -> bool:
    """True on a pure cgroup v2 host (controllers in the unified hierarchy)."""
    return (root / "cgroup.controllers").exists()


def lxc_cgroup_lines(limits: Limits, *, unified: bool, root: Path = CGROUP_ROOT) -> list[str]:
    """``lxc.cgroup*.`` config lines enforcing ``limits`` (every field must be set)."""
    assert limits.cpus is not None and limits.memory_mb is not None and limits.pids is not None
    memory = limits.memory_mb << 20
    quota = max(1000, round(limits.cpus * _CFS_PERIOD_US))
    if unified:
        return [
            f"lxc.cgroup2.memory.max = {memory}",
            "lxc.cgroup2.memory.swap.max = 0",
            f"lxc.cgroup2.pids.max = {limits.pids}",
            f"lxc.cgroup2.cpu.max = {quota} {_CFS_PERIOD_US}",
        ]
    lines = [f"lxc.cgroup.memory.limit_in_bytes = {memory}"]
    if (root / "memory" / "memory.memsw.limit_in_bytes").exists():
        lines.append(f"lxc.cgroup.memory.memsw.limit_in_bytes = {memory}")  # no swapping past the limit
    return [
        *lines,
        f"lxc.cgroup.pids.max = {limits.pids}",
        f"lxc.cgroup.cpu.cfs_period_us = {_CFS_PERIOD_US}",
        f"lxc.cgroup.cpu.cfs_quota_us = {quota}",
    ]
