"""File operations inside the guest, on the guest's own filesystem: stat, list, mkdir, remove, rename.

The guest agent runs these for the host's ``file`` requests (standard library
only: they run in every guest). Paths come from the host absolute and
normalised; resolving them here, symlinks included, can reach nothing but
the VM's own disks. A refusal names the kind of problem (as the host's
``FileError`` does); anything else raises ``OSError`` with its errno.
Writing to a path is done beside it in a temporary file (``prepare_write``)
renamed in place at the end, so an interrupted upload leaves the old file.
"""

from __future__ import annotations

import contextlib
import os
import stat

TYPE_CHECKING = False  # importing typing costs milliseconds at every start; mypy reads this as typing's
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Refused(Exception):
    """A request turned down, with the kind of problem for the host."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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


def stat_path(path: str) -> dict[str, Any]:
    return _info(path, os.path.basename(path) or "/", os.lstat(path))


def list_dir(path: str, limit: int) -> dict[str, Any]:
    names = sorted(os.listdir(path))
    entries = []
    for name in names[:limit]:
        full = os.path.join(path, name)
        try:
            entries.append(_info(full, name, os.lstat(full)))
        except FileNotFoundError:
            continue  # removed while we listed
    return {"entries": entries, "truncated": len(names) > limit}


def make_dir(path: str, parents: bool) -> None:
    if parents:
        os.makedirs(path, exist_ok=True)
    else:
        os.mkdir(path)


def remove(path: str, recursive: bool) -> None:
    if path == "/":
        raise Refused("invalid", "refusing to remove /")
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        if recursive:
            import shutil  # only here: a costly import at every boot

            shutil.rmtree(path)
        else:
            os.rmdir(path)
    else:
        os.unlink(path)


def rename(source: str, target: str, overwrite: bool) -> None:
    if not overwrite and os.path.lexists(target):
        raise Refused("exists", f"{target} exists; pass overwrite to replace it")
    os.rename(source, target)


def open_for_reading(path: str) -> dict[str, Any]:
    """Size and mtime of a regular file about to be read (by ``cat``)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = "is_a_directory" if stat.S_ISDIR(st.st_mode) else "not_a_file"
        raise Refused(kind, f"{path} is not a regular file")
    return {"size": st.st_size, "mtime": st.st_mtime}


def prepare_write(path: str, parents: bool) -> dict[str, Any]:
    """An empty temporary file beside ``path`` (with the mode it will keep), to write and then rename."""
    parent, name = os.path.split(path)
    if not name:
        raise Refused("is_a_directory", f"{path} is a directory")
    if parents:
        os.makedirs(parent, exist_ok=True)
    mode = 0o644
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            raise Refused("is_a_directory", f"{path} is a directory")
        if stat.S_ISREG(st.st_mode):
            mode = stat.S_IMODE(st.st_mode)
    temp = os.path.join(parent, f".{name[:200]}.chaser-{os.urandom(6).hex()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return {"temp": temp}


def finish_write(temp: str, path: str, commit: bool) -> None:
    """Put the written temporary file in place of ``path``, or drop it."""
    if commit:
        os.rename(temp, path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


OPERATIONS: dict[str, Callable[..., object]] = {
    "stat": stat_path,
    "list": list_dir,
    "mkdir": make_dir,
    "remove": remove,
    "rename": rename,
    "open": open_for_reading,
    "prepare_write": prepare_write,
    "finish_write": finish_write,
}
