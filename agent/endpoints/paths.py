"""Paths given by clients for files in a sandbox, checked before any runtime sees them.

A path is taken as absolute (relative ones are under the sandbox user's
home), normalised, and refused if it has a ``..`` component, a NUL byte or
an over-long part: a client names files in its sandbox by where they are,
never by climbing. Where symlinks lead is settled by the runtime, which
resolves every path inside the sandbox's own root.
"""

from __future__ import annotations

from chaser.wire import errors

HOME = "/root"
MAX_PATH = 4096
MAX_NAME = 255


def sandbox_path(raw: str, *, home: str = HOME) -> str:
    """The normalised absolute form of ``raw``, or InvalidInput (code ``invalid_path``)."""
    if not raw:
        raise errors.InvalidInput("a path is required", code="invalid_path")
    if "\x00" in raw or len(raw.encode()) > MAX_PATH:
        raise errors.InvalidInput("path has a NUL byte or is too long", code="invalid_path")
    if not raw.startswith("/"):
        raw = f"{home}/{raw}"
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise errors.InvalidInput(f"path {raw!r} climbs with '..'; give it from the root", code="invalid_path")
    if any(len(p.encode()) > MAX_NAME for p in parts):
        raise errors.InvalidInput(f"a part of path {raw!r} is over {MAX_NAME} bytes", code="invalid_path")
    return "/" + "/".join(parts)
