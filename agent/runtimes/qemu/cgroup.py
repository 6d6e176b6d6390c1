"""The cgroup a VM's QEMU runs in: the session's CPU and memory limits, enforced on the host.

A VM's processes are out of the host's sight, so its limits are put on
QEMU itself: CFS quota for CPU, and memory for the guest's RAM plus QEMU's
own overhead (under TCG, mostly its translated-code cache, capped with
``tb-size``). The pids limit applies inside the guest's own kernel (its RAM
bounds a fork bomb); QEMU gets an allowance for its threads.

One directory per VM, ``chaser-vm-<id>``, at the top of each hierarchy (v1:
memory, pids, cpu; v2: the unified one). QEMU starts stopped (``-S`` or
``-incoming``), is moved in, and only then runs the guest, so its RAM is
charged here from the first page. Blocking: call from a thread.
"""

from __future__ import annotations

import time
from pathlib import Path

from agent.runtimes.base import RuntimeFailure
from agent.runtimes.limits import CGROUP_ROOT, cgroup_settings, unified_hierarchy
from chaser.wire.isolation import Limits

# Threads QEMU may run: main loop, vCPUs, I/O workers (its pool holds 64).
QEMU_PIDS = 256
_V1_CONTROLLERS = ("memory", "pids", "cpu")
_REMOVE_PATIENCE = 2.0


def cgroup_dirs(sandbox_id: str, root: Path = CGROUP_ROOT) -> list[Path]:
    name = f"chaser-vm-{sandbox_id}"
    if unified_hierarchy(root):
        return [root / name]
    return [root / controller / name for controller in _V1_CONTROLLERS]


def vm_limits(limits: Limits, memory_overhead_mb: int) -> Limits:
    """What QEMU's cgroup enforces for a guest with ``limits``."""
    assert limits.memory_mb is not None
    return limits.model_copy(update={"memory_mb": limits.memory_mb + memory_overhead_mb, "pids": QEMU_PIDS})


def enter(sandbox_id: str, pid: int, limits: Limits, root: Path = CGROUP_ROOT) -> None:
    """Make the VM's cgroup with ``limits`` (as from ``vm_limits``) and move QEMU ``pid`` into it."""
    unified = unified_hierarchy(root)
    dirs = cgroup_dirs(sandbox_id, root)
    try:
        for directory in dirs:
            directory.mkdir(exist_ok=True)
        for name, value in cgroup_settings(limits, unified=unified, root=root):
            directory = dirs[0] if unified else root / name.split(".")[0] / dirs[0].name
            (directory / name).write_text(value)
        for directory in dirs:
            (directory / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        raise RuntimeFailure(f"cannot put QEMU in its cgroup: {exc}") from None


def remove(sandbox_id: str, root: Path = CGROUP_ROOT) -> None:
    """Remove the VM's cgroup once QEMU has exited (it empties a moment later); idempotent."""
    give_up = time.monotonic() + _REMOVE_PATIENCE
    for directory in cgroup_dirs(sandbox_id, root):
        while True:
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.01)
