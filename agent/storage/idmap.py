"""Containers' root is an unprivileged range of host ids: the map, and trees owned by it.

Every container runs in a user namespace whose ids 0..count-1 are the host's
``first``..``first+count-1`` (``root:100000:65536`` in ``/etc/subuid`` and
``/etc/subgid``, which the install step adds). One range for all containers,
not one per sandbox: an image's read-only layer is then shifted once per
host and shared by every container (a range per sandbox would need a copy
of the image per range, or idmapped mounts under overlayfs, which this
kernel generation does not offer everywhere). Containers stay apart from
each other by their own user, mount, pid and network namespaces; what a
shared range would expose (two sandboxes' files to each other) they never
share.

A tree the host makes for a container (an image's shifted copy, a writable
layer, a workspace) must be owned by the mapped ids, or the container's
root sees it as ``nobody`` and cannot write it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class IdMap:
    """Container ids 0..count-1 are host ids first..first+count-1 (users and groups alike)."""

    first: int = 100_000
    count: int = 65_536

    def lxc_config(self) -> str:
        return f"lxc.idmap = u 0 {self.first} {self.count}\nlxc.idmap = g 0 {self.first} {self.count}\n"

    def host_id(self, inside: int) -> int:
        """The host id of container id ``inside`` (ids beyond the range become its root's)."""
        return self.first + inside if 0 <= inside < self.count else self.first

    def own(self, path: Path) -> None:
        """Give ``path`` (not what is below it) to the container's root."""
        os.lchown(path, self.first, self.first)

    def shift(self, root: Path) -> None:
        """Move every file under ``root`` (itself included) into the range, keeping modes.

        chown clears setuid and setgid bits, so each mode is put back after.
        """
        for directory, dirnames, filenames in os.walk(root):
            for name in (".", *dirnames, *filenames):
                path = os.path.join(directory, name) if name != "." else directory
                st = os.lstat(path)
                os.lchown(path, self.host_id(st.st_uid), self.host_id(st.st_gid))
                if st.st_mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISLNK(st.st_mode):
                    os.chmod(path, stat.S_IMODE(st.st_mode))


def shifted_image(image_root: Path, idmap: IdMap) -> Path:
    """A copy of an image's tree owned by the container range, made once per host.

    Beside the image (``<image>.shifted-<first>-<count>``), built under a
    lock and renamed into place whole, so concurrent agents share one.
    """
    target = image_root.with_name(f"{image_root.name}.shifted-{idmap.first}-{idmap.count}")
    if target.is_dir():
        return target
    with open(image_root.with_name(f".{target.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return target
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        # cp keeps hard links, xattrs and sparse files, and clones on a reflink filesystem.
        subprocess.run(["cp", "-a", "--reflink=auto", str(image_root), str(partial)], check=True)
        idmap.shift(partial)
        partial.rename(target)
    return target
