"""Copy-on-write disks for VMs: qcow2 overlays, frozen bases, and their cleanup.

Every sandbox writes to its own ``disk.qcow2``, an overlay over something
read-only: the image's blank scratch disk, a template's disk, or a *base* —
the disk of a paused sandbox frozen when it was forked. Freezing moves the
paused disk into ``bases/`` and puts a fresh overlay over it in its place, so
the paused sandbox and each of its forks continue from the same bytes
without copying them. A base is deleted once no disk's backing chain (read
from the qcow2 headers themselves, the one source of truth) reaches it.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterable
from pathlib import Path

import trio

from agent.runtimes.base import RuntimeFailure

_QCOW2_MAGIC = b"QFI\xfb"


def backing_file(disk: Path) -> Path | None:
    """The backing file named in a qcow2 header, or None (raw, or no backing)."""
    try:
        with open(disk, "rb") as f:
            header = f.read(20)
            if len(header) < 20 or header[:4] != _QCOW2_MAGIC:
                return None
            offset, size = struct.unpack(">QI", header[8:20])
            if offset == 0:
                return None
            f.seek(offset)
            return Path(f.read(size).decode())
    except OSError:
        return None


def chain(disk: Path) -> list[Path]:
    """``disk`` and every file under it, top first."""
    files = [disk]
    while (below := backing_file(files[-1])) is not None and below not in files:
        files.append(below)
    return files


async def overlay(backing: Path, target: Path) -> None:
    """A new, empty qcow2 at ``target`` over ``backing`` (raw or qcow2)."""
    fmt = "qcow2" if backing_file(backing) is not None or _is_qcow2(backing) else "raw"
    done = await trio.run_process(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", fmt, str(target)],
        capture_stderr=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeFailure(f"qemu-img create failed: {done.stderr.decode(errors='replace').strip()}")


def _is_qcow2(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == _QCOW2_MAGIC


class Bases:
    """The frozen disks under ``root``; callers serialise freeze and collect."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.lock = trio.Lock()

    async def freeze(self, disk: Path) -> Path:
        """Make ``disk``'s current contents a base; ``disk`` becomes an overlay over it."""
        base = self.root / f"{uuid.uuid4()}.qcow2"
        os.rename(disk, base)
        try:
            await overlay(base, disk)
        except BaseException:
            os.rename(base, disk)
            raise
        os.chmod(base, 0o400)
        return base

    def collect(self, disks: Iterable[Path]) -> list[Path]:
        """Delete bases no chain from ``disks`` reaches; returns what was deleted."""
        reached = {path for disk in disks for path in chain(disk)}
        removed = [base for base in self.root.glob("*.qcow2") if base not in reached]
        for base in removed:
            base.unlink(missing_ok=True)
        return removed
