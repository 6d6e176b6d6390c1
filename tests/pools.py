"""Storage pools for tests: a real XFS with reflink, on a loop file in a temp dir.

``xfs_pool`` tears down by unmounting, which fails while any disk of the pool
is still loop-mounted: a test that leaks a mount or a loop device fails at
teardown instead of leaving it on the machine.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from agent.storage import mounts

POOL_SIZE = "4G"


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def xfs_pool(parent: Path) -> Iterator[Path]:
    """Mount a fresh sparse XFS (``reflink=1``) at ``parent/pool``; remove it after."""
    image, mount = parent / "pool.xfs", parent / "pool"
    with open(image, "xb") as f:
        f.truncate(0)
    _run("truncate", "-s", POOL_SIZE, str(image))
    try:
        _run("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
        mount.mkdir()
        _run("mount", "-o", "loop", str(image), str(mount))
        try:
            yield mount
        finally:
            leaked = mounts.mounts_under(mount)
            _run("umount", str(mount))
            mount.rmdir()
            assert leaked == [], f"mounts left inside the pool: {leaked}"
    finally:
        image.unlink()


def loops_of(root: Path) -> list[str]:
    """Loop devices backed by files under ``root`` (for leak checks)."""
    done = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                          check=True, capture_output=True, text=True, timeout=30)  # fmt: skip
    found = []
    for line in done.stdout.splitlines():
        name, _, back = line.strip().partition(" ")
        if back.strip() and root.resolve() in Path(back.strip().removesuffix(" (deleted)")).parents:
            found.append(name)
    return found
