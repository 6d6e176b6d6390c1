"""The initramfs every VM of an image boots: busybox, modules, init, guest agent.

Contents (all fixed-mode, root-owned, in a stable order):

    /init                      vmimages/guest/init.sh
    /bin/busybox               from Debian's busybox-static
    /lib/modules/*.ko          kernel.GUEST_MODULES and their dependencies
    /etc/chaser-modules        their load order, one file name a line
    /chaser/vmimages/guest/    the guest agent's sources
    /chaser/lib/msgpack/       Debian's python3-msgpack, for the image's python3

init copies /chaser into the new root's /run/chaser before handing over.
The Python files come with their bytecode when the image's python3 has the
builder's version (compiling them is a good part of a cold boot under TCG);
otherwise the guest compiles them itself.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import py_compile
import sys
import tempfile
from pathlib import Path

from vmimages.cpio import Entry, archive

GUEST_DIR = Path(__file__).resolve().parent / "guest"
_DIRS = ("bin", "dev", "proc", "sys", "etc", "lib", "lib/modules", "chaser", "chaser/vmimages")
_PACKAGE_INIT = b'"""The guest\'s copy of the vmimages package: only guest/ is shipped."""\n'


def guest_sources() -> list[Path]:
    """The guest's files, in a stable order."""
    return sorted(p for p in GUEST_DIR.iterdir() if p.suffix in (".py", ".sh"))


@functools.cache
def inputs_digest() -> str:
    """Hash of what this builder puts in from the repository: part of VM recipes' digests."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in guest_sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _python_package(directory: str, files: list[tuple[str, bytes]], compile_for: str | None) -> list[Entry]:
    """Entries for a package's files, plus ``__pycache__`` if compiling for this Python."""
    items = [Entry.directory(directory)]
    items += [Entry.file(f"{directory}/{name}", data) for name, data in files]
    if compile_for != f"{sys.version_info.major}.{sys.version_info.minor}":
        return items
    items.append(Entry.directory(f"{directory}/__pycache__"))
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files:
            if not name.endswith(".py"):
                continue
            source = Path(tmp) / name
            source.write_bytes(data)
            # Unchecked: the guest never compares the pyc with the source's mtime.
            compiled = Path(tmp) / "out.pyc"
            py_compile.compile(
                str(source),
                cfile=str(compiled),
                dfile=f"/run/{directory}/{name}",
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
            cached = Path(importlib.util.cache_from_source(name)).name
            items.append(Entry.file(f"{directory}/__pycache__/{cached}", compiled.read_bytes()))
    return items


def entries(busybox: Path, modules: list[Path], msgpack_dir: Path, python_version: str | None) -> list[Entry]:
    """What goes into the archive, in archive order; ``python_version``: the image's (``3.11``)."""
    items = [Entry.directory(d) for d in _DIRS]
    items.append(Entry.char_device("dev/console", 5, 1))
    items.append(Entry.file("init", (GUEST_DIR / "init.sh").read_bytes(), executable=True))
    items.append(Entry.file("bin/busybox", busybox.read_bytes(), executable=True))
    items += [Entry.file(f"lib/modules/{m.name}", m.read_bytes()) for m in modules]
    items.append(Entry.file("etc/chaser-modules", "".join(f"{m.name}\n" for m in modules).encode()))
    items.append(Entry.file("chaser/vmimages/__init__.py", _PACKAGE_INIT))
    guest = [(p.name, p.read_bytes()) for p in guest_sources() if p.suffix == ".py"]
    items += _python_package("chaser/vmimages/guest", guest, python_version)
    items.append(Entry.directory("chaser/lib"))
    msgpack = [(p.name, p.read_bytes()) for p in sorted(msgpack_dir.iterdir()) if p.is_file()]
    items += _python_package("chaser/lib/msgpack", msgpack, python_version)
    return items


def write(target: Path, busybox: Path, modules: list[Path], msgpack_dir: Path, python_version: str | None) -> None:
    """Write the (uncompressed: the kernel unpacks it fastest) initramfs."""
    target.write_bytes(archive(entries(busybox, modules, msgpack_dir, python_version)))
