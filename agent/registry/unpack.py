"""Unpack one image layer into a directory of its own, treating the layer as hostile.

A layer is a tar stream (gzip-compressed or plain) from whoever published the
image. Unpacked here it becomes one lower directory of a sandbox's overlay,
so it must become exactly that and nothing more:

- Every entry is made through directory descriptors opened with
  ``O_NOFOLLOW`` from the layer's root, so no path, ``..`` or symlink (one in
  the layer, or one a previous entry planted) can reach outside it. A path
  that is absolute, holds ``..`` or passes through a symlink is refused, as
  is a hard link to anything not already in this layer.
- Symlinks are stored as they are, never followed here: inside the sandbox
  their targets resolve within its own root (``/etc/alternatives/...`` links
  are absolute in every Debian image).
- Device nodes are refused; setuid bits (and setgid on files) are dropped,
  as the sandbox's mounts are ``nosuid`` anyway; extended attributes (file
  capabilities among them) are not carried over.
- Whiteouts become overlay's: ``.wh.NAME`` a 0:0 character device,
  ``.wh..wh..opq`` the ``trusted.overlay.opaque`` attribute.
- Owners are shifted into the containers' id range as files are made.
- The uncompressed size is bounded (a decompression bomb stops at the
  limit), and both the blob's digest and its uncompressed ``diff_id`` are
  checked once the stream has been read to its end.

The caller unpacks into a fresh directory and renames it into place only
when this returns, so an interrupted unpack leaves nothing a sandbox uses.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.storage.idmap import IdMap

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayerRefused(Exception):
    """The layer is malformed or hostile; the message says what was wrong."""


class LayerTooLarge(Exception):
    """The layer unpacks to more than the operator allows."""


@dataclass(frozen=True)
class Unpacked:
    bytes: int  # uncompressed size of the tar stream
    entries: int


class _Digesting:
    """A reader that hashes and counts what passes through it, up to ``limit`` bytes."""

    def __init__(self, source: BinaryIO, limit: int | None = None) -> None:
        self.source = source
        self.limit = limit
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.count += len(data)
        if self.limit is not None and self.count > self.limit:
            raise LayerTooLarge(f"the layer unpacks to more than {self.limit} bytes")
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def unpack_layer(
    blob: Path,
    target: Path,
    idmap: IdMap,
    *,
    digest: str,
    diff_id: str | None,
    max_bytes: int,
    max_entries: int = 500_000,
) -> Unpacked:
    """Unpack the layer ``blob`` into the existing, empty directory ``target``."""
    with open(blob, "rb") as raw_file:
        head = raw_file.read(4)
        raw_file.seek(0)
        if head.startswith(_ZSTD_MAGIC):
            raise LayerRefused("zstd-compressed layers are not supported; push the image with gzip layers")
        raw = _Digesting(raw_file)
        if head.startswith(_GZIP_MAGIC):
            tar_stream = _Digesting(gzip.GzipFile(fileobj=raw, mode="rb"), max_bytes)  # type: ignore[call-overload]
        else:
            raw.limit = max_bytes
            tar_stream = raw
        root = os.open(target, _DIR_FLAGS)
        try:
            entries = _extract(tar_stream, root, idmap, max_entries)
            tar_stream.drain()
            raw.drain()
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise LayerRefused(f"the layer is not a valid tar stream: {exc}") from None
        finally:
            os.close(root)
    if raw.digest != digest:
        raise LayerRefused(f"the layer's content has digest {raw.digest}, not the {digest} its manifest names")
    if diff_id is not None and tar_stream.digest != diff_id:
        raise LayerRefused(f"the layer's uncompressed digest is {tar_stream.digest}, not the config's {diff_id}")
    return Unpacked(bytes=tar_stream.count, entries=entries)


def _extract(stream: _Digesting, root: int, idmap: IdMap, max_entries: int) -> int:
    entries = 0
    with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
        for member in archive:
            entries += 1
            if entries > max_entries:
                raise LayerRefused(f"the layer has more than {max_entries} entries")
            parts = _components(member.name)
            if not parts:
                continue  # the layer's root itself: it keeps the store's owner and mode
            try:
                _apply(archive, member, parts, root, idmap)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise LayerRefused(f"{member.name!r} passes through a symlink or a file") from None
                raise LayerRefused(f"{member.name!r} could not be unpacked: {exc.strerror}") from None
    return entries


def _components(name: str) -> list[str]:
    """The path's parts inside the layer; refuses absolute paths and ``..``."""
    if name.startswith("/"):
        raise LayerRefused(f"{name!r} is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise LayerRefused(f"{name!r} climbs out of the layer with '..'")
    return parts


def _open_dir(root: int, parts: list[str], *, create: bool, idmap: IdMap) -> int:
    """A descriptor of the directory ``parts`` below ``root``, never following a symlink."""
    fd = os.dup(root)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                os.chown(part, idmap.first, idmap.first, dir_fd=fd, follow_symlinks=False)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove(name: str, parent: int) -> None:
    """Clear what a previous entry made at ``name`` (a later entry replaces it)."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


def _apply(archive: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str], root: int, idmap: IdMap) -> None:
    name = parts[-1]
    parent = _open_dir(root, parts[:-1], create=True, idmap=idmap)
    try:
        if name == _OPAQUE:
            os.setxattr(parent, "trusted.overlay.opaque", b"y")
            return
        if name.startswith(_WHITEOUT + _WHITEOUT):
            return  # other AUFS bookkeeping (.wh..wh.plnk and the like): nothing for overlay
        if name.startswith(_WHITEOUT):
            hidden = name[len(_WHITEOUT) :]
            if hidden in ("", ".", ".."):
                raise LayerRefused(f"{member.name!r} is not a valid whiteout")
            _remove(hidden, parent)
            os.mknod(hidden, 0o600 | stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
            return
        _make(archive, member, name, parent, root, idmap)
    finally:
        os.close(parent)


def _make(archive: tarfile.TarFile, member: tarfile.TarInfo, name: str, parent: int, root: int, idmap: IdMap) -> None:
    if member.isdir():
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                _remove(name, parent)
                os.mkdir(name, 0o700, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(name, 0o700, dir_fd=parent)
    elif member.isreg():
        _remove(name, parent)
        source = archive.extractfile(member)
        assert source is not None
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
    elif member.issym():
        _remove(name, parent)
        os.symlink(member.linkname, name, dir_fd=parent)
        os.chown(name, idmap.host_id(member.uid), idmap.host_id(member.gid), dir_fd=parent, follow_symlinks=False)
        return  # a symlink's mode and times are its target's business
    elif member.islnk():
        target = _components(member.linkname)
        if not target:
            raise LayerRefused(f"{member.name!r} is a hard link to the layer's root")
        try:
            source_dir = _open_dir(root, target[:-1], create=False, idmap=idmap)
        except FileNotFoundError:
            raise LayerRefused(f"{member.name!r} is a hard link to {member.linkname!r}, not in the layer") from None
        try:
            _remove(name, parent)
            os.link(target[-1], name, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise LayerRefused(f"{member.name!r} is a hard link to {member.linkname!r}, not in the layer") from None
        finally:
            os.close(source_dir)
        return  # a hard link shares its target's owner and mode
    elif member.isfifo():
        _remove(name, parent)
        os.mkfifo(name, 0o600, dir_fd=parent)
    elif member.ischr() or member.isblk():
        raise LayerRefused(f"{member.name!r} is a device node; images may not carry devices")
    else:
        raise LayerRefused(f"{member.name!r} has an unknown entry type {member.type!r}")
    os.chown(name, idmap.host_id(member.uid), idmap.host_id(member.gid), dir_fd=parent, follow_symlinks=False)
    mode = stat.S_IMODE(member.mode) & ~stat.S_ISUID
    if not member.isdir():
        mode &= ~stat.S_ISGID
    # ``name`` is what this call just made (no symlink), in a directory only the unpacker writes.
    os.chmod(name, mode, dir_fd=parent)
    os.utime(name, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)
