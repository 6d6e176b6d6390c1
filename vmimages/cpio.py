"""A newc cpio writer: the format of a Linux initramfs.

Written here rather than by the ``cpio`` tool so that the archive depends
only on its entries: fixed inode numbers, owners and mtimes, in the order
given, and so the same inputs give the same bytes.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """A file, directory or device node; ``path`` is relative, without a leading /."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @classmethod
    def directory(cls, path: str) -> Entry:
        return cls(path, stat.S_IFDIR | 0o755)

    @classmethod
    def file(cls, path: str, data: bytes, executable: bool = False) -> Entry:
        return cls(path, stat.S_IFREG | (0o755 if executable else 0o644), data)

    @classmethod
    def char_device(cls, path: str, major: int, minor: int, perms: int = 0o600) -> Entry:
        return cls(path, stat.S_IFCHR | perms, rdev=(major, minor))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, entry: Entry, name: bytes) -> bytes:
    fields = (
        ino,
        entry.mode,
        0,  # uid
        0,  # gid
        2 if stat.S_ISDIR(entry.mode) else 1,  # nlink
        0,  # mtime
        len(entry.data),
        0,  # devmajor
        0,  # devminor
        entry.rdev[0],
        entry.rdev[1],
        len(name),
        0,  # check
    )
    return b"070701" + "".join(f"{value:08x}" for value in fields).encode()


def archive(entries: list[Entry]) -> bytes:
    """The cpio archive of ``entries``, in order, then the trailer."""
    out = bytearray()
    for ino, entry in enumerate([*entries, Entry(_TRAILER, 0)], start=1):
        name = entry.path.encode() + b"\0"
        head = _header(ino, entry, name) + name
        out += head + _pad(len(head)) + entry.data + _pad(len(entry.data))
    return bytes(out)
