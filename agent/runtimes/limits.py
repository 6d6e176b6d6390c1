"""Turning a session's ``Limits`` into cgroup settings (for LXC, or a VM's QEMU), v1 or v2.

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

from chaser.wire.isolation import Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")
_CFS_PERIOD_US = 100_000


def unified_hierarchy(root: Path = CGROUP_ROOT) -> bool:
    """True on a pure cgroup v2 host (controllers in the unified hierarchy)."""
    return (root / "cgroup.controllers").exists()


def cgroup_settings(limits: Limits, *, unified: bool, root: Path = CGROUP_ROOT) -> list[tuple[str, str]]:
    """(file, value) pairs enforcing ``limits`` (every field must be set), in the order to write them.

    On v1 each file lives in the hierarchy its name starts with (``memory``, ``pids``, ``cpu``).
    """
    assert limits.cpus is not None and limits.memory_mb is not None and limits.pids is not None
    memory = limits.memory_mb << 20
    quota = max(1000, round(limits.cpus * _CFS_PERIOD_US))
    if unified:
        return [
            ("memory.max", str(memory)),
            ("memory.swap.max", "0"),
            ("pids.max", str(limits.pids)),
            ("cpu.max", f"{quota} {_CFS_PERIOD_US}"),
        ]
    settings = [("memory.limit_in_bytes", str(memory))]
    if (root / "memory" / "memory.memsw.limit_in_bytes").exists():
        settings.append(("memory.memsw.limit_in_bytes", str(memory)))  # no swapping past the limit
    return [
        *settings,
        ("pids.max", str(limits.pids)),
        ("cpu.cfs_period_us", str(_CFS_PERIOD_US)),
        ("cpu.cfs_quota_us", str(quota)),
    ]


def lxc_cgroup_lines(limits: Limits, *, unified: bool, root: Path = CGROUP_ROOT) -> list[str]:
    """``lxc.cgroup*.`` config lines enforcing ``limits`` (every field must be set)."""
    key = "lxc.cgroup2" if unified else "lxc.cgroup"
    return [f"{key}.{name} = {value}" for name, value in cgroup_settings(limits, unified=unified, root=root)]
