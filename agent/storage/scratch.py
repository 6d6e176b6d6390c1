"""Fixed-size writable layers: one btrfs subvolume per sandbox, capped by a quota group.

A sandbox's overlay upper layer must not be able to fill the host's disk.
The kernels we run on may lack generic quota support (XFS and ext4 project
quotas need ``CONFIG_QUOTA``; this machine's kernel has none), while btrfs
quota groups are btrfs's own and always there. So the agent keeps its
sandboxes' directories on a btrfs filesystem in a sparse file, which it
makes and mounts at first start (and finds mounted after a restart).
Each sandbox directory is a subvolume with a ``qgroup limit``: writes
beyond it fail with EDQUOT inside that sandbox only.
Creating one is two short commands; removing the directory removes the
subvolume (an empty subvolume can be rmdir'ed).

All functions block: call them from a thread.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

_UNMOUNT_PATIENCE = 5.0


class StorageError(Exception):
    """A storage command failed; the message is the command's."""


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, check=False)
    if done.returncode != 0:
        raise StorageError(f"{' '.join(argv)}: {done.stderr.decode(errors='replace').strip()}")


def _mounted(path: Path) -> bool:
    return os.path.ismount(path)


class ScratchVolume:
    """The btrfs filesystem holding sandboxes' directories, at ``mountpoint``."""

    def __init__(self, mountpoint: Path, image: Path, size_gb: int) -> None:
        self.mountpoint = mountpoint
        self.image = image
        self.size_gb = size_gb

    def open(self) -> None:
        """Mount (making the filesystem first if needed) and enable quotas; idempotent."""
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        if not _mounted(self.mountpoint):
            if not self.image.exists():
                with open(self.image, "wb") as f:
                    f.truncate(self.size_gb << 30)
                try:
                    _run("mkfs.btrfs", "-q", str(self.image))
                except StorageError:
                    self.image.unlink()
                    raise
            _run("mount", "-o", "loop", str(self.image), str(self.mountpoint))
        _run("btrfs", "quota", "enable", str(self.mountpoint))

    def close(self, *, remove: bool) -> None:
        """Unmount (whichever run mounted it); with ``remove``, delete the backing file too."""
        if _mounted(self.mountpoint):
            # A container's monitor may still be exiting: the mount can be busy for a moment.
            give_up = time.monotonic() + _UNMOUNT_PATIENCE
            while subprocess.run(["umount", str(self.mountpoint)], capture_output=True).returncode != 0:
                if time.monotonic() > give_up:
                    _run("umount", str(self.mountpoint))
                time.sleep(0.05)
        if remove:
            self.image.unlink(missing_ok=True)

    def make_directory(self, path: Path, limit_mb: int) -> None:
        """``path`` as a new subvolume whose contents may use at most ``limit_mb``."""
        _run("btrfs", "subvolume", "create", str(path))
        try:
            os.chmod(path, 0o711)  # containers' root passes through to its layer
            _run("btrfs", "qgroup", "limit", f"{limit_mb}M", str(path))
        except BaseException:
            os.rmdir(path)
            raise
