"""The guest side of a microVM: its init script and the guest agent.

Everything in this folder is copied into each VM image's initramfs and runs
inside the VM on the image's own ``python3`` (plus Debian's python3-msgpack,
shipped beside it), so it uses the standard library and msgpack only.
``protocol`` is shared with the host, which imports it from here.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent


def source_files() -> list[Path]:
    """The files that go into the guest, in a stable order."""
    return sorted(p for p in SOURCE_DIR.iterdir() if p.suffix in (".py", ".sh"))


@functools.cache
def sources_digest() -> str:
    """Hash of the guest's sources: part of every VM recipe's digest."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
