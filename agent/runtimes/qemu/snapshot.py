"""Save a VM's memory and device state to a file, and load it back, over QMP.

This is QEMU's migration, to and from a file descriptor passed with
``getfd`` (no shell, no ``exec:`` URI). Saving stops the VM first, so the
stream is one pass over memory (zero pages cost a flag) rather than an
iterative pre-copy. The file is written beside its final name and renamed
once complete and on disk, so a snapshot that exists is whole.

QEMU 7.2 streams the snapshot; for resume times of tens of milliseconds on
KVM, the memory would have to be mapped from the file instead of read in
(QEMU's ``mapped-ram`` capability, 9.0+, or Firecracker-style mmap of a
memory file), which this module is the place for.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import trio

from agent.runtimes.qemu.qmp import QmpClient, QmpError

_POLL = 0.02


async def _wait_for_migration(qmp: QmpClient) -> None:
    while True:
        info = await qmp.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise QmpError(f"migration {status}: {info.get('error-desc', 'no reason given')}")
        await trio.sleep(_POLL)


async def save(qmp: QmpClient, target: Path) -> int:
    """Stop the VM and write its state to ``target``; returns the file's size.

    On failure the VM is left running, as it was.
    """
    partial = target.with_name(target.name + ".partial")
    await qmp.execute("stop")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            await qmp.execute("getfd", {"fdname": "snapshot"}, fd=fd)
        finally:
            os.close(fd)
        await qmp.execute("migrate", {"uri": "fd:snapshot"})
        await _wait_for_migration(qmp)
        await trio.to_thread.run_sync(_fsync, partial)
        os.replace(partial, target)
    except BaseException:
        with trio.CancelScope(shield=True), contextlib.suppress(QmpError):
            partial.unlink(missing_ok=True)
            await qmp.execute("migrate_cancel")
            await qmp.execute("cont")
        raise
    return target.stat().st_size


async def load(qmp: QmpClient, source: Path) -> None:
    """Load a saved state into a QEMU started with ``-incoming defer``, and run it."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        await qmp.execute("getfd", {"fdname": "snapshot"}, fd=fd)
    finally:
        os.close(fd)
    await qmp.execute("migrate-incoming", {"uri": "fd:snapshot"})
    await _wait_for_migration(qmp)
    # Saved while stopped, so it loads stopped: run it.
    await qmp.execute("cont")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
