"""Loop mounts of workspace disks on the host, freezing them, and finding strays.

A disk (an ext4 image file) is mounted with ``mount -o loop``, which flags
its loop device *autoclear*: the device goes away with the last unmount, so
unmounting is the whole cleanup. After a crash, ``mounts_under`` and
``loops_backed_under`` find what the agent left, so that recovery can remove
it. ``frozen`` holds a mounted filesystem still (``fsfreeze``) while a
snapshot of its backing file is taken, so the copy is not torn.

Everything here runs programs (util-linux) through ``trio.run_process``: the
trio loop never blocks on them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import trio

log = logging.getLogger(__name__)

# A user's disk carries no device nodes or setuid programs the host honours.
MOUNT_OPTIONS = "loop,nodev,nosuid,noatime"
_UNMOUNT_ATTEMPTS = 5
# No mount tool has a reason to take long; one that hangs (a wedged device)
# must not hang the agent, cleanup under a shield included.
_TOOL_TIMEOUT = 60.0


class MountError(Exception):
    """A mount tool failed; the message carries its stderr."""


async def _run(*argv: str) -> None:
    try:
        with trio.fail_after(_TOOL_TIMEOUT):
            done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    except trio.TooSlowError:
        raise MountError(f"{' '.join(argv)}: no answer within {_TOOL_TIMEOUT:g}s") from None
    if done.returncode != 0:
        raise MountError(f"{' '.join(argv)}: {done.stderr.decode(errors='replace').strip()}")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def mount_points() -> list[Path]:
    """Every mount point of this mount namespace, in mount order."""
    with open("/proc/self/mountinfo") as f:
        return [Path(_unescape(line.split()[4])) for line in f]


def mounts_under(root: Path) -> list[Path]:
    """Mount points strictly below ``root``, innermost (last mounted) first."""
    return [p for p in reversed(mount_points()) if root in p.parents]


def is_mounted(target: Path) -> bool:
    return target in mount_points()


async def loops_backed_under(root: Path) -> list[str]:
    """Loop devices whose backing file lies below ``root``."""
    with trio.fail_after(_TOOL_TIMEOUT):
        done = await trio.run_process(
            ["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"], capture_stdout=True, check=False
        )
    if done.returncode != 0 or not done.stdout.strip():
        return []
    devices = json.loads(done.stdout).get("loopdevices", [])
    return [
        d["name"]
        for d in devices
        if d.get("back-file") and root in Path(d["back-file"].removesuffix(" (deleted)")).parents
    ]


async def mount_disk(image: Path, target: Path) -> None:
    """Mount the ext4 image ``image`` on ``target`` (created if missing)."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        await _run("mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(image), str(target))
    except BaseException:
        with trio.CancelScope(shield=True):
            # Cancelled while mount ran: it may have finished regardless.
            await unmount(target)
        raise


async def unmount(target: Path) -> None:
    """Unmount ``target`` if mounted and remove the empty directory; idempotent.

    A mount can stay busy for a moment after the last process using it died
    (a container's teardown); retry briefly before giving up.
    """
    for attempt in range(_UNMOUNT_ATTEMPTS):
        if not is_mounted(target):
            break
        try:
            await _run("umount", str(target))
        except MountError:
            if attempt == _UNMOUNT_ATTEMPTS - 1:
                raise
            await trio.sleep(0.1 * (attempt + 1))
    with contextlib.suppress(FileNotFoundError):
        target.rmdir()


async def detach_loop(device: str) -> None:
    await _run("losetup", "--detach", device)


@contextlib.asynccontextmanager
async def frozen(target: Path) -> AsyncIterator[None]:
    """Hold the filesystem mounted at ``target`` frozen: synced, writes blocked.

    The thaw runs whatever ends the block, cancellation included.
    """
    try:
        await _run("fsfreeze", "--freeze", str(target))
        yield
    finally:
        with trio.CancelScope(shield=True):
            await thaw(target)


async def thaw(target: Path) -> None:
    """Unfreeze; a filesystem that is not frozen is left as it is."""
    try:
        await _run("fsfreeze", "--unfreeze", str(target))
    except MountError as exc:
        if "Invalid argument" not in str(exc):
            raise
