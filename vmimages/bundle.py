"""The in-sandbox agent as a self-contained, read-only bundle that runs in any image.

Every container gets this directory bind-mounted read-only at
``BUNDLE_MOUNT``; its init is the guest agent started from it, so an image
needs nothing from us: no Python, no glibc, not even a shell (a busybox or
distroless root works). The bundle holds Debian's own ``python3.11``, the
shared libraries it and the few extension modules we keep link against
(the loader included), the standard library without the parts a daemon
never imports, Debian's ``python3-msgpack``, and ``vmimages/guest``::

    bin/python3                    Debian's /usr/bin/python3.11
    lib/ld-linux-x86-64.so.2 ...   the loader and every library ldd lists
    lib/python3.11/                the standard library (and lib-dynload)
    site/msgpack/                  Debian's python3-msgpack
    site/vmimages/guest/           the guest agent

It is started as ``lib/ld-linux-x86-64.so.2 --library-path lib bin/python3``
(``guest_argv``), so the image's own loader and libraries are never used.
Built once per host into ``<images_dir>/sandbox-agent-<digest>/`` (the
digest covers the guest's sources and the interpreter), atomically: a
half-built bundle is never seen. A VM cannot see the host's files, so it
gets the same bundle as a read-only erofs disk made beside it (``disk``),
which its init mounts at ``BUNDLE_MOUNT`` before starting the agent from it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
import shutil
import subprocess
from pathlib import Path

from vmimages.disk import make_erofs

log = logging.getLogger(__name__)

# Where the bundle appears inside every sandbox.
BUNDLE_MOUNT = "/.chaser"
GUEST_DIR = Path(__file__).resolve().parent / "guest"
PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
MSGPACK = Path("/usr/lib/python3/dist-packages/msgpack")
LOADER = "ld-linux-x86-64.so.2"
# Bump when what this module puts in the bundle changes.
BUNDLE_VERSION = 1
# Parts of the standard library a daemon never imports (about half of it).
_SKIPPED = {
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
    "distutils", "unittest", "sqlite3", "dbm", "curses", "config-3.11-x86_64-linux-gnu",
    "site-packages", "dist-packages",
}  # fmt: skip
# Extension modules kept (the rest of lib-dynload is tests, GUIs, databases).
_EXTENSIONS = re.compile(r"^(termios|resource|mmap|_json|_bz2|_lzma|_contextvars|_queue|_typing|_posixshmem)\.")
_PACKAGE_INIT = '"""The bundle\'s copy of the vmimages package: only guest/ is shipped."""\n'


def guest_sources() -> list[Path]:
    """The guest agent's modules, in a stable order."""
    return sorted(p for p in GUEST_DIR.iterdir() if p.suffix == ".py")


def digest() -> str:
    """What the bundle is made of: the guest's sources, the interpreter, this builder."""
    material = hashlib.sha256(f"{BUNDLE_VERSION}\0".encode())
    material.update(Path(__file__).read_bytes())
    for path in guest_sources():
        material.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    material.update(PYTHON.read_bytes())
    return material.hexdigest()[:16]


def bundle_dir(images_dir: Path) -> Path:
    return images_dir / f"sandbox-agent-{digest()}"


def guest_argv(listen: str) -> list[str]:
    """The command line (inside the sandbox) of the guest agent listening on abstract socket ``listen``.

    ``site`` comes on ``PYTHONPATH`` (set by whoever starts it): without
    ``site`` (-S) and the working directory (-P), nothing of the image's is imported.
    """
    return [
        f"{BUNDLE_MOUNT}/lib/{LOADER}",
        "--library-path",
        f"{BUNDLE_MOUNT}/lib",
        f"{BUNDLE_MOUNT}/bin/python3",
        "-S",
        "-P",
        "-B",
        "-m",
        "vmimages.guest.agent",
        "--listen",
        listen,
    ]


def build(images_dir: Path) -> Path:
    """Build the bundle unless it is there; return its directory."""
    target = bundle_dir(images_dir)
    if (target / "bin" / "python3").exists():
        return target
    images_dir.mkdir(parents=True, exist_ok=True)
    with open(images_dir / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "bin" / "python3").exists():
            return target
        partial = images_dir / f".{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        _assemble(partial)
        partial.rename(target)
        log.info("built the sandbox agent bundle %s", target)
    return target


def disk(bundle: Path) -> Path:
    """``bundle`` as a read-only erofs disk, ``<bundle>.erofs`` beside it, made unless there: what VMs attach.

    Keyed by the bundle's name (its digest), made atomically, readable by
    every VM's uid (their QEMUs open it read-only).
    """
    target = bundle.with_name(f"{bundle.name}.erofs")
    if target.exists():
        return target
    with open(bundle.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        partial = bundle.parent / f".{target.name}.partial"
        partial.unlink(missing_ok=True)  # a crashed build's
        try:
            make_erofs(bundle, partial)
            partial.chmod(0o444)
            partial.rename(target)
        finally:
            partial.unlink(missing_ok=True)
        log.info("made the sandbox agent bundle's disk %s", target)
    return target


def _assemble(root: Path) -> None:
    for where in ("bin", "lib", "site/vmimages/guest"):
        (root / where).mkdir(parents=True)
    shutil.copy2(PYTHON, root / "bin" / "python3")
    stdlib = root / "lib" / "python3.11"
    shutil.copytree(
        STDLIB,
        stdlib,
        symlinks=True,
        ignore=lambda where, names: [n for n in names if n in _SKIPPED] if Path(where) == STDLIB else [],
    )
    dynload = stdlib / "lib-dynload"
    extensions = []
    for module in dynload.iterdir():
        if _EXTENSIONS.match(module.name):
            extensions.append(module)
        else:
            module.unlink()
    for library in _libraries([PYTHON, *extensions, *MSGPACK.glob("*.so")]):
        shutil.copy2(library, root / "lib" / library.name)
    shutil.copytree(MSGPACK, root / "site" / "msgpack", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "site" / "vmimages" / "__init__.py").write_text(_PACKAGE_INIT)
    for source in guest_sources():
        shutil.copy2(source, root / "site" / "vmimages" / "guest" / source.name)
    # Compiled now, with this very interpreter: the sandbox can't write here.
    subprocess.run(
        [str(PYTHON), "-m", "compileall", "-q", "-j", "0", str(root / "site"), str(stdlib)],
        check=False,
        capture_output=True,
    )
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() or path.suffix == ".so" or path.parent.name == "bin" else 0o644)
    (root / "lib" / LOADER).chmod(0o755)


def _libraries(binaries: list[Path]) -> set[Path]:
    """Every shared library (the loader included) that ``binaries`` load, by the names they are loaded by."""
    found: set[Path] = set()
    for binary in binaries:
        listing = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
        found.update(Path(match) for match in re.findall(r"(/\S+\.so[.\d]*)", listing))
    return {path for path in found if path.exists()}
