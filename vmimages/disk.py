"""The disks a microVM boots with.

The image's root filesystem becomes an erofs disk: read-only by design and
compact, shared by every VM of the image (QEMU opens it read-only). Each
session writes to its own qcow2 overlay over a blank ext4 "scratch" disk,
which the guest uses as the upper layer of an overlayfs on top of the image.
Both are made here, with fixed UUIDs and timestamps so that the same inputs
give the same bytes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Fixed, for reproducible disks (the guest finds its disks by serial, not UUID).
_UUID = "63686173-6572-2d76-6d2d-6469736b2d31"


def make_erofs(tree: Path, target: Path) -> None:
    """An uncompressed erofs image of ``tree`` (TCG guests pay for decompression)."""
    subprocess.run(["mkfs.erofs", "--quiet", "-T0", f"-U{_UUID}", str(target), str(tree)], check=True)


def make_scratch(target: Path, size_gib: int) -> None:
    """A sparse, empty ext4 filesystem, fully initialised so the guest never is."""
    with open(target, "wb") as disk:
        disk.truncate(size_gib << 30)
    subprocess.run(
        [
            "mkfs.ext4", "-q", "-F", "-L", "chaser-rw", "-U", _UUID,
            "-E", f"lazy_itable_init=0,lazy_journal_init=0,hash_seed={_UUID}",
            str(target),
        ],
        check=True,
        env={**os.environ, "E2FSPROGS_FAKE_TIME": "1"},
    )  # fmt: skip
