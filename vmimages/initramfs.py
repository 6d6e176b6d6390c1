"""The initramfs every VM of an image boots: busybox, modules, init, guest agent.

Contents (all fixed-mode, root-owned, in a stable order):

    /init                      vmimages/guest/init.sh
    /bin/busybox               from Debian's busybox-static
    /lib/modules/*.ko          kernel.GUEST_MODULES and their dependencies
    /etc/chaser-modules        their load order, one file name a line
    /chaser/vmimages/guest/    the guest agent's sources
    /chaser/lib/msgpack/       Debian's python3-msgpack, for the image's python3

init copies /chaser into the new root's /run/chaser before handing over.
"""

from __future__ import annotations

from pathlib import Path

from vmimages import guest
from vmimages.cpio import Entry, archive

_DIRS = ("bin", "dev", "proc", "sys", "etc", "lib", "lib/modules", "chaser", "chaser/vmimages")
_PACKAGE_INIT = b'"""The guest\'s copy of the vmimages package: only guest/ is shipped."""\n'


def entries(busybox: Path, modules: list[Path], msgpack_dir: Path) -> list[Entry]:
    """What goes into the archive, in archive order."""
    items = [Entry.directory(d) for d in _DIRS]
    items.append(Entry.char_device("dev/console", 5, 1))
    items.append(Entry.file("init", (guest.SOURCE_DIR / "init.sh").read_bytes(), executable=True))
    items.append(Entry.file("bin/busybox", busybox.read_bytes(), executable=True))
    items += [Entry.file(f"lib/modules/{m.name}", m.read_bytes()) for m in modules]
    items.append(Entry.file("etc/chaser-modules", "".join(f"{m.name}\n" for m in modules).encode()))
    items.append(Entry.file("chaser/vmimages/__init__.py", _PACKAGE_INIT))
    items.append(Entry.directory("chaser/vmimages/guest"))
    items += [
        Entry.file(f"chaser/vmimages/guest/{p.name}", p.read_bytes()) for p in guest.source_files() if p.suffix == ".py"
    ]
    items += [Entry.directory("chaser/lib"), Entry.directory("chaser/lib/msgpack")]
    items += [
        Entry.file(f"chaser/lib/msgpack/{p.name}", p.read_bytes()) for p in sorted(msgpack_dir.iterdir()) if p.is_file()
    ]
    return items


def write(target: Path, busybox: Path, modules: list[Path], msgpack_dir: Path) -> None:
    """Write the (uncompressed: the kernel unpacks it fastest) initramfs."""
    target.write_bytes(archive(entries(busybox, modules, msgpack_dir)))
