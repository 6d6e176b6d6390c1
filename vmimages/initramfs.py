"""The initramfs every VM of an image boots: busybox, modules, init.

Contents (all fixed-mode, root-owned, in a stable order):

    /init                      vmimages/guest/init.sh
    /bin/busybox               from Debian's busybox-static
    /lib/modules/*.ko          kernel.GUEST_MODULES and their dependencies
    /etc/chaser-modules        their load order, one file name a line

The guest agent is not in it: init starts it from the bundle's disk
(``vmimages.bundle``), so it needs nothing from the image either.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from vmimages.cpio import Entry, archive

INIT = Path(__file__).resolve().parent / "guest" / "init.sh"
_DIRS = ("bin", "dev", "proc", "sys", "etc", "lib", "lib/modules")


@functools.cache
def inputs_digest() -> str:
    """Hash of what this builder puts in from the repository: part of VM recipes' digests."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(INIT.read_bytes())
    return digest.hexdigest()


def entries(busybox: Path, modules: list[Path]) -> list[Entry]:
    """What goes into the archive, in archive order."""
    items = [Entry.directory(d) for d in _DIRS]
    items.append(Entry.char_device("dev/console", 5, 1))
    items.append(Entry.file("init", INIT.read_bytes(), executable=True))
    items.append(Entry.file("bin/busybox", busybox.read_bytes(), executable=True))
    items += [Entry.file(f"lib/modules/{m.name}", m.read_bytes()) for m in modules]
    items.append(Entry.file("etc/chaser-modules", "".join(f"{m.name}\n" for m in modules).encode()))
    return items


def write(target: Path, busybox: Path, modules: list[Path]) -> None:
    """Write the (uncompressed: the kernel unpacks it fastest) initramfs."""
    target.write_bytes(archive(entries(busybox, modules)))
