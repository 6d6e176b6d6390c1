"""The guest agent's own file streams: read, write, tar and untar, run in a forked child.

The host asks for one with an ``exec`` whose ``tool`` names it; the guest
agent forks, and the child runs the function here with the process's pipes
as its standard streams, so the bytes are streamed and flow-controlled like
any process's output or input, and a slow filesystem stalls only that child.
Nothing here depends on the image: no ``cat``, ``tar`` or shell is needed.

Names are never looked up: tarfile's user and group names would go through
the image's NSS modules (``/etc/nsswitch.conf``, ``libnss_*.so``), code the
tenant chose, so archives carry numeric ids only.
"""

from __future__ import annotations

import os
import signal
import stat
import tarfile

from vmimages.guest import untar

_CHUNK = 256 << 10


def _say(message: str) -> None:
    os.write(2, (message + "\n").encode(errors="replace"))


def _copy(source: int, target: int) -> None:
    while True:
        data = os.read(source, _CHUNK)
        if not data:
            return
        view = memoryview(data)
        while view:
            view = view[os.write(target, view) :]


def read_file(path: str) -> int:
    """The content of a regular file on stdout."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                _say(f"{path} is not a regular file")
                return 1
            os.set_blocking(fd, True)
            _copy(fd, 1)
        finally:
            os.close(fd)
    except OSError as exc:
        _say(f"{path}: {exc.strerror}")
        return 1
    return 0


def write_file(path: str) -> int:
    """Stdin into ``path``, a temporary file ``fileops.prepare_write`` made (never followed if a link)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _copy(0, fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _say(f"{path}: {exc.strerror}")
        return 1
    return 0


def archive(path: str) -> int:
    """A tar stream of ``path`` on stdout: a directory as its contents, a file as itself."""
    _no_name_lookups()
    try:
        st = os.lstat(path)
        arcname = "." if stat.S_ISDIR(st.st_mode) else os.path.basename(path)
        with (
            os.fdopen(1, "wb", closefd=False) as out,
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            tar.add(path, arcname=arcname, recursive=True)
    except (OSError, tarfile.TarError) as exc:
        _say(f"archive failed: {exc}")
        return 1
    return 0


def extract(path: str) -> int:
    """The tar stream on stdin into directory ``path``, by ``untar``'s rules."""
    _no_name_lookups()
    with os.fdopen(0, "rb", closefd=False) as source:
        return untar.extract(path, source)


def _no_name_lookups() -> None:
    """Make tarfile skip pwd and grp (it checks for them being None)."""
    tarfile.pwd = None  # type: ignore[attr-defined]
    tarfile.grp = None  # type: ignore[attr-defined]


TOOLS = {"read": read_file, "write": write_file, "archive": archive, "extract": extract}


def run(name: str, args: list[str]) -> None:
    """In the forked child: run the tool and exit with its code, whatever happens."""
    code = 1
    try:
        # The agent's signal handling and every descriptor it holds (the host
        # connection, other processes' pipes) are not the child's.
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGIO, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGPIPE else signal.SIG_IGN)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        code = TOOLS[name](*args)
    except BaseException as exc:  # the child must end here, never return into the agent's loop
        _say(f"{name} failed: {exc!r}")
    finally:
        os._exit(code)
