"""Code that runs *inside* an LXC container, in a child made by ``lxc attach``.

The child is a fork of the agent that has entered every namespace of the
container (its mount namespace makes ``/`` the container's root), so paths
resolve, symlinks included, exactly as they would for a program in the
sandbox, and nothing here can name a file of the host. Results travel back
over a socket: a JSON reply, plus file descriptors (an open file, a
terminal) passed with SCM_RIGHTS so the agent streams from them directly.

Only the standard library and no logging: the child is a fork of a
multi-threaded process and must not touch locks other threads may hold.
Being a fork (no exec), it also holds a copy of every descriptor of the
agent; each entry point first closes all it does not need, or a pipe's
write end kept here would stop the pipe from ever reaching its end.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import stat
import struct
import tarfile
import termios
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_FD = os.sysconf("SC_OPEN_MAX")

# Reply of a call: JSON-able data and descriptors to hand over.
Reply = tuple[Any, list[int]]


class Refused(Exception):
    """A request the child turns down, with a FileError kind for the caller."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Call:
    """A function to run in the container and the socket to answer on."""

    fn: Callable[..., Reply]
    args: Sequence[Any]
    sock_fd: int


def close_inherited(keep: int | None = None) -> None:
    """Close every descriptor above stderr except ``keep``."""
    if keep is None:
        os.closerange(3, MAX_FD)
    else:
        os.closerange(3, keep)
        os.closerange(keep + 1, MAX_FD)


def run_call(call: Call) -> int:
    """Attach entry point: run ``call.fn`` and send its reply (or its error)."""
    close_inherited(call.sock_fd)
    sock = socket.socket(fileno=call.sock_fd)
    fds: list[int] = []
    try:
        result, fds = call.fn(*call.args)
        reply: dict[str, Any] = {"ok": result}
    except Refused as exc:
        reply = {"refused": exc.kind, "message": str(exc)}
    except OSError as exc:
        reply = {"errno": exc.errno or errno.EIO, "message": exc.strerror or str(exc)}
    except Exception as exc:
        reply = {"errno": errno.EIO, "message": str(exc)}
    socket.send_fds(sock, [b"R"], fds)
    sock.sendall(json.dumps(reply).encode())
    sock.close()
    return 0


def _info(path: str, name: str, st: os.stat_result) -> dict[str, Any]:
    if stat.S_ISREG(st.st_mode):
        kind = "file"
    elif stat.S_ISDIR(st.st_mode):
        kind = "directory"
    elif stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    else:
        kind = "other"
    return {
        "name": name,
        "path": path,
        "type": kind,
        "size": st.st_size,
        "mode": stat.S_IMODE(st.st_mode),
        "mtime": st.st_mtime,
        "link_target": os.readlink(path) if kind == "symlink" else None,
    }


def stat_path(path: str) -> Reply:
    return _info(path, os.path.basename(path) or "/", os.lstat(path)), []


def list_dir(path: str, limit: int) -> Reply:
    names = sorted(os.listdir(path))
    entries = []
    for name in names[:limit]:
        full = os.path.join(path, name)
        try:
            entries.append(_info(full, name, os.lstat(full)))
        except FileNotFoundError:
            continue  # removed while we listed
    return {"entries": entries, "truncated": len(names) > limit}, []


def make_dir(path: str, parents: bool) -> Reply:
    if parents:
        os.makedirs(path, exist_ok=True)
    else:
        os.mkdir(path)
    return None, []


def remove(path: str, recursive: bool) -> Reply:
    if path == "/":
        raise Refused("invalid", "refusing to remove /")
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        if recursive:
            shutil.rmtree(path)
        else:
            os.rmdir(path)
    else:
        os.unlink(path)
    return None, []


def rename(source: str, target: str, overwrite: bool) -> Reply:
    if not overwrite and os.path.lexists(target):
        raise Refused("exists", f"{target} exists; pass overwrite to replace it")
    os.rename(source, target)
    return None, []


def open_for_reading(path: str) -> Reply:
    # O_NONBLOCK so that opening a FIFO cannot hang the child.
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "is_a_directory" if stat.S_ISDIR(st.st_mode) else "not_a_file"
        raise Refused(kind, f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return {"size": st.st_size, "mtime": st.st_mtime}, [fd]


def open_for_writing(path: str, parents: bool) -> Reply:
    """A temporary file beside ``path`` and its directory, for an atomic rename later."""
    parent, name = os.path.split(path)
    if not name:
        raise Refused("is_a_directory", f"{path} is a directory")
    if parents:
        os.makedirs(parent, exist_ok=True)
    dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        mode = 0o644
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode):
                raise Refused("is_a_directory", f"{path} is a directory")
            if stat.S_ISREG(st.st_mode):
                mode = stat.S_IMODE(st.st_mode)
        temp = f".{name[:200]}.chaser-{secrets.token_hex(6)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(dir_fd)
        raise
    return {"temp": temp, "name": name}, [dir_fd, fd]


def open_terminal(sock_fd: int, argv: Sequence[str], env: dict[str, str], cwd: str | None, cols: int, rows: int) -> int:
    """Attach entry point: a new terminal of the container, the program on it.

    The terminal's master side goes back to the agent over ``sock_fd``; this
    process becomes the session leader with the terminal as its controlling
    one, then execs the program.
    """
    close_inherited(sock_fd)
    sock = socket.socket(fileno=sock_fd)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    socket.send_fds(sock, [b"T"], [master])
    sock.close()
    os.close(master)
    try:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for target in (0, 1, 2):
            os.dup2(slave, target)
        if slave > 2:
            os.close(slave)
        if cwd:
            os.chdir(cwd)
        os.execvpe(argv[0], list(argv), env)
    except OSError as exc:
        os.write(2, f"chaser: cannot run {argv[0]!r}: {exc.strerror}\r\n".encode())
    return 127


def _say(message: str) -> None:
    """To the stderr pipe (fd 2) itself: ``sys.stderr`` is whatever the agent had."""
    os.write(2, (message + "\n").encode(errors="replace"))


def write_archive(path: str) -> int:
    """Attach entry point: a tar stream of ``path`` on stdout (a directory as its contents)."""
    close_inherited()
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


def extract_archive(path: str) -> int:
    """Attach entry point: extract the tar stream on stdin into directory ``path``.

    tarfile's "data" filter keeps every member inside ``path``: leading
    slashes are stripped, and members with ``..`` that climb out, links
    pointing outside, and device files are refused.
    """
    close_inherited()
    try:
        os.makedirs(path, exist_ok=True)
        with os.fdopen(0, "rb", closefd=False) as src, tarfile.open(fileobj=src, mode="r|") as tar:
            tar.extractall(path, filter="data")
    except tarfile.FilterError as exc:
        _say(f"refused: {exc}")
        return 2
    except tarfile.TarError as exc:
        _say(f"not a valid tar stream: {exc}")
        return 2
    except OSError as exc:
        _say(f"extract failed: {exc}")
        return 1
    return 0
