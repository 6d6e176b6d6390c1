"""The storage pool: workspace disks and their snapshots, as files on one filesystem.

Layout under the pool's root::

    disks/<workspace id>.img                      a sparse ext4 image
    snapshots/<workspace id>/<snapshot id>.img
    staging/                                      files being made

Every file is made in ``staging/`` and renamed into place once complete, so
a crash leaves at most staging debris, which ``clear_staging`` removes on
the next start. Snapshots and clones are reflinks (the FICLONE ioctl: O(1),
extents shared copy-on-write) when the pool's filesystem has them (XFS made
with ``reflink=1``, btrfs); anywhere else they are sparse copies, and the
log says so once at start.

The same disk image serves both runtimes: LXC loop-mounts it, a microVM
gets it as a virtio-blk device.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

import trio

log = logging.getLogger(__name__)

# _IOW(0x94, 9, int) from <linux/fs.h>; Python's fcntl names it only from 3.12.
FICLONE = 0x40049409
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS}
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# ext4 with lazy init: making a 10 GiB disk writes a few MiB and takes ~20 ms.
# No blocks reserved for root: the disk is all the user's.
_MKFS = ("mkfs.ext4", "-q", "-F", "-m", "0")
_MKFS_EXTENDED = "lazy_itable_init=1,lazy_journal_init=1,nodiscard"


def _checked(an_id: str) -> str:
    """Ids become file names: only canonical UUIDs ever do."""
    if not _ID.match(an_id):
        raise ValueError(f"not a canonical UUID: {an_id!r}")
    return an_id


def reflink(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy-on-write clone of ``src`` (blocking; O(1))."""
    with open(src, "rb") as source, open(dst, "wb") as target:
        fcntl.ioctl(target.fileno(), FICLONE, source.fileno())


def _sparse_file(path: Path, size_bytes: int) -> None:
    with open(path, "xb") as f:
        f.truncate(size_bytes)


class StoragePool:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.disks_dir = self.root / "disks"
        self.snapshots_dir = self.root / "snapshots"
        self.staging_dir = self.root / "staging"
        for directory in (self.disks_dir, self.snapshots_dir, self.staging_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.reflink = self._probe_reflink()
        if self.reflink:
            log.info("storage pool %s clones by reflink", self.root)
        else:
            log.warning(
                "storage pool %s has no reflink support: snapshots and clones are full sparse copies "
                "(put the pool on XFS made with reflink=1, or btrfs, for O(1) ones)",
                self.root,
            )

    def _probe_reflink(self) -> bool:
        probe, clone = self.staged(), self.staged()
        try:
            probe.write_bytes(b"reflink probe")
            reflink(probe, clone)
        except OSError as exc:
            if exc.errno in _NO_REFLINK:
                return False
            raise
        finally:
            self.discard(probe)
            self.discard(clone)
        return True

    # -- paths ------------------------------------------------------------

    def disk(self, disk_id: str) -> Path:
        return self.disks_dir / f"{_checked(disk_id)}.img"

    def snapshot(self, disk_id: str, snapshot_id: str) -> Path:
        return self.snapshots_dir / _checked(disk_id) / f"{_checked(snapshot_id)}.img"

    def staged(self) -> Path:
        """A fresh path in staging (nothing is created)."""
        return self.staging_dir / f"{uuid.uuid4()}.img"

    # -- making files -----------------------------------------------------

    async def make_filesystem(self, path: Path, size_bytes: int, root_owner: int = 0) -> None:
        """Create ``path`` as a sparse file of ``size_bytes`` holding an empty ext4
        whose root belongs to ``root_owner`` (user and group).

        Empty means empty: ``lost+found`` is removed (fsck makes it again if
        ever needed), so ``git clone URL .`` works in a fresh workspace.
        """
        await trio.to_thread.run_sync(_sparse_file, path, size_bytes)
        mkfs = [*_MKFS, "-E", f"{_MKFS_EXTENDED},root_owner={root_owner}:{root_owner}", str(path)]
        for argv in (mkfs, ["debugfs", "-w", "-R", "rmdir lost+found", str(path)]):
            done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
            if done.returncode != 0:
                raise OSError(f"{argv[0]} failed: {done.stderr.decode(errors='replace').strip()}")

    async def copy(self, src: Path, dst: Path) -> None:
        """Copy ``src`` to the new file ``dst``: a reflink here, else a sparse copy."""
        if self.reflink:
            await trio.to_thread.run_sync(reflink, src, dst)
            return
        argv = ["cp", "--sparse=always", "--reflink=never", "--", str(src), str(dst)]
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
        if done.returncode != 0:
            raise OSError(f"copy failed: {done.stderr.decode(errors='replace').strip()}")

    @staticmethod
    def commit(staged: Path, final: Path) -> None:
        """Move a complete staged file into place, atomically replacing any old one."""
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(staged, final)

    @staticmethod
    def discard(path: Path) -> None:
        path.unlink(missing_ok=True)

    # -- removing ---------------------------------------------------------

    def delete_disk(self, disk_id: str) -> None:
        """Remove a disk and every snapshot of it; idempotent."""
        self.disk(disk_id).unlink(missing_ok=True)
        shutil.rmtree(self.snapshots_dir / _checked(disk_id), ignore_errors=True)

    def delete_snapshot(self, disk_id: str, snapshot_id: str) -> None:
        self.snapshot(disk_id, snapshot_id).unlink(missing_ok=True)

    def clear_staging(self) -> None:
        for path in self.staging_dir.iterdir():
            path.unlink(missing_ok=True)

    # -- reporting --------------------------------------------------------

    def usage(self) -> dict[str, object]:
        """What the scheduler needs to place disks: room left, and clone speed."""
        stat = os.statvfs(self.root)
        return {
            "reflink": self.reflink,
            "capacity_bytes": stat.f_blocks * stat.f_frsize,
            "free_bytes": stat.f_bavail * stat.f_frsize,
        }
