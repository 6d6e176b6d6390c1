"""Copy-on-write disks for VMs: qcow2 overlays, frozen bases, and their cleanup.

Every sandbox writes to its own ``disk.qcow2``, an overlay over something
read-only: the image's blank scratch disk, a template's disk, or a *base* —
the disk of a paused sandbox frozen when it was forked. Freezing moves the
paused disk into ``bases/`` and puts a fresh overlay over it in its place, so
the paused sandbox and each of its forks continue from the same bytes
without copying them. Shared disks are root's and read-only for all
(``qemu_jail.share``): every VM's QEMU may read those under its own disk,
none may write them.

What lies under a disk is the chain the agent recorded when it made it
(``VmConfig.backing``), never the qcow2 header: a jailed QEMU can rewrite
the header of its own disk, and the agent must not read, bind or keep files
on its word. So ``qemu-img`` is told the size and format and does not open
the backing file, and a base is deleted once no recorded chain has it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import trio

from agent.runtimes.base import RuntimeFailure
from agent.runtimes.qemu.jail import share


async def overlay(chain: tuple[str, ...], target: Path) -> None:
    """A new, empty qcow2 at ``target`` over ``chain`` (top first; its last is the image's raw scratch disk)."""
    size = os.stat(chain[-1]).st_size  # every disk of a chain is as big as the one at its bottom
    fmt = "qcow2" if len(chain) > 1 else "raw"
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", chain[0], "-F", fmt, str(target), str(size)]
    done = await trio.run_process(argv, capture_stderr=True, check=False)
    if done.returncode != 0:
        raise RuntimeFailure(f"qemu-img create failed: {done.stderr.decode(errors='replace').strip()}")


class Bases:
    """The frozen disks under ``root``; callers serialise freeze and collect."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.lock = trio.Lock()

    async def freeze(self, disk: Path, chain: tuple[str, ...]) -> tuple[str, ...]:
        """Make ``disk``'s current contents a base; ``disk`` becomes an overlay over it.

        ``chain`` is what lies under ``disk``; returns what lies under it now.
        """
        base = self.root / f"{uuid.uuid4()}.qcow2"
        os.rename(disk, base)
        frozen = (str(base), *chain)
        try:
            await overlay(frozen, disk)
        except BaseException:
            os.rename(base, disk)
            raise
        share(base)
        return frozen

    def collect(self, chains: Iterable[Iterable[str]]) -> list[Path]:
        """Delete bases none of ``chains`` has; returns what was deleted."""
        reached = {Path(path) for chain in chains for path in chain}
        removed = [base for base in self.root.glob("*.qcow2") if base not in reached]
        for base in removed:
            base.unlink(missing_ok=True)
        return removed
