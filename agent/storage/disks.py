"""The agent's workspace disks: who holds each one, and every operation on them.

A disk is held by at most one sandbox: mounted on the host at
``<mounts_dir>/<sandbox id>`` and bound into the container at
``/workspace``, or, for a VM, handed to it whole as a block device (the
guest mounts it; the host never does while the VM holds it). Operations on a disk (attach, snapshot, restore, clone from
it, re-import, delete) take that disk's lock, so they never interleave.
Those that replace or remove a disk refuse (409) while a sandbox holds it;
a snapshot or clone of a held disk is refused too unless forced, and is then
taken with the filesystem frozen (by ``fsfreeze`` on the host, or by the
holder's own freezer for a disk a VM holds), so it is consistent, not torn.

Files are made in the pool's staging area and renamed into place, so a
failure, a cancel or a crash half-way never leaves a half-made disk; a
crash's stray mounts, loop devices and staging files are removed by
``recover`` on the next start.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio

from agent.storage import mounts
from agent.storage.idmap import IdMap
from agent.storage.pool import StoragePool
from chaser.wire import errors

log = logging.getLogger(__name__)

# How long an operation waits for another one on the same disk to finish.
LOCK_WAIT = 30.0

# Holds a device-attached disk's filesystem still (as seen from the host's
# file) for the duration of the block: frozen inside the guest, or a VM paused.
Freezer = Callable[[], AbstractAsyncContextManager[None]]


class DiskManager:
    def __init__(
        self,
        pool: StoragePool,
        mounts_dir: Path,
        *,
        op_timeout: float,
        import_timeout: float,
        idmap: IdMap | None = None,
    ) -> None:
        self.pool = pool
        # Containers' root owns what is on a disk (a VM's root may write anything anyway).
        self.idmap = idmap or IdMap()
        self.mounts_dir = mounts_dir.resolve()
        self.mounts_dir.mkdir(parents=True, exist_ok=True)
        self.mounts_dir.chmod(0o711)  # containers' root passes through to the workspaces mounted here
        self.op_timeout = op_timeout
        self.import_timeout = import_timeout
        self._holders: dict[str, str] = {}  # disk id -> sandbox id
        # Sandboxes holding their disk as a device, with how to freeze it.
        self._freezers: dict[str, Freezer] = {}
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)

    # -- bookkeeping ------------------------------------------------------

    def mount_point(self, sandbox_id: str) -> Path:
        return self.mounts_dir / sandbox_id

    def holder(self, disk_id: str) -> str | None:
        return self._holders.get(disk_id)

    @contextlib.asynccontextmanager
    async def _locked(self, *disk_ids: str, wait: float = LOCK_WAIT) -> AsyncIterator[None]:
        """Hold the locks of ``disk_ids`` (in a fixed order, so two never deadlock)."""
        async with contextlib.AsyncExitStack() as stack:
            for disk_id in sorted(set(disk_ids)):
                lock = self._locks[disk_id]
                with trio.move_on_after(wait) as waited:
                    await lock.acquire()
                if waited.cancelled_caught:
                    raise errors.Conflict("another operation on this workspace is still running", code="disk_busy")
                stack.callback(lock.release)
            yield

    def _require_disk(self, disk_id: str) -> Path:
        path = self.pool.disk(disk_id)
        if not path.exists():
            raise errors.NotFound(f"disk {disk_id} is not on this host", code="disk_not_found")
        return path

    def _require_snapshot(self, disk_id: str, snapshot_id: str) -> Path:
        path = self.pool.snapshot(disk_id, snapshot_id)
        if not path.exists():
            raise errors.NotFound(f"snapshot {snapshot_id} is not on this host", code="snapshot_not_found")
        return path

    def _refuse_if_held(self, disk_id: str, doing: str) -> None:
        holder = self._holders.get(disk_id)
        if holder is not None:
            raise errors.Conflict(f"cannot {doing}: session {holder} has the disk attached", code="disk_in_use")

    def _refuse_if_exists(self, disk_id: str) -> None:
        if self.pool.disk(disk_id).exists():
            raise errors.Conflict(f"disk {disk_id} already exists", code="disk_exists")

    async def _produce(self, final: Path, make: Callable[[Path], Awaitable[None]], timeout: float) -> None:
        """Make a file in staging with ``make``, then move it to ``final``; all or nothing."""
        staged = self.pool.staged()
        try:
            with trio.fail_after(timeout):
                await make(staged)
            self.pool.commit(staged, final)
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.pool.discard, staged)
            if isinstance(exc, trio.TooSlowError):
                raise errors.Timeout(f"the disk operation did not finish within {timeout:g}s") from None
            if isinstance(exc, OSError):
                log.warning("disk operation failed: %s", exc)
                raise errors.Unavailable(
                    f"the storage pool failed: {exc.strerror or exc}", code="storage_failed"
                ) from None
            raise

    @contextlib.asynccontextmanager
    async def _still(self, disk_id: str, force: bool, doing: str) -> AsyncIterator[bool]:
        """Yield once ``disk_id`` can be copied consistently; True if frozen to get there."""
        holder = self._holders.get(disk_id)
        if holder is None:
            yield False
            return
        if not force:
            raise errors.Conflict(
                f"cannot {doing}: session {holder} has the disk attached; pass force=true to take it "
                "with the filesystem frozen",
                code="disk_in_use",
            )
        freezer = self._freezers.get(holder)
        async with freezer() if freezer is not None else mounts.frozen(self.mount_point(holder)):
            yield True

    # -- disks ------------------------------------------------------------

    async def create(self, disk_id: str, size_bytes: int) -> None:
        """A new, empty ext4 disk."""
        async with self._locked(disk_id):
            self._refuse_if_exists(disk_id)
            await self._produce(
                self.pool.disk(disk_id),
                lambda path: self.pool.make_filesystem(path, size_bytes, self.idmap.first),
                self.op_timeout,
            )

    async def clone(self, disk_id: str, source_id: str, snapshot_id: str | None, force: bool) -> bool:
        """A new disk copied from another one (or from a snapshot of it); True if frozen."""
        async with self._locked(disk_id, source_id):
            self._refuse_if_exists(disk_id)
            if snapshot_id is not None:
                source = self._require_snapshot(source_id, snapshot_id)
                await self._produce(self.pool.disk(disk_id), lambda path: self.pool.copy(source, path), self.op_timeout)
                return False
            source = self._require_disk(source_id)
            async with self._still(source_id, force, "clone the disk") as frozen:
                await self._produce(self.pool.disk(disk_id), lambda path: self.pool.copy(source, path), self.op_timeout)
            return frozen

    async def fill(
        self, disk_id: str, size_bytes: int, content: Callable[[Path], Awaitable[None]], *, replace: bool
    ) -> None:
        """A fresh disk whose files ``content`` makes, within the import deadline
        (a Git import clones into it from a sandbox); with ``replace``, it takes
        the old one's place.

        ``content`` gets the disk's root, mounted on the host and owned by the
        containers' root; it is unmounted before the disk is committed.
        """

        async def make(path: Path) -> None:
            await self.pool.make_filesystem(path, size_bytes, self.idmap.first)
            target = self.mounts_dir / f"import-{uuid.uuid4()}"
            await mounts.mount_disk(path, target)
            try:
                await content(target)
            finally:
                with trio.CancelScope(shield=True):
                    await mounts.unmount(target)

        async with self._locked(disk_id):
            if replace:
                self._require_disk(disk_id)
                self._refuse_if_held(disk_id, "re-import the repository")
            else:
                self._refuse_if_exists(disk_id)
            await self._produce(self.pool.disk(disk_id), make, self.import_timeout)

    async def delete(self, disk_id: str) -> None:
        """Remove the disk and all its snapshots; a disk already gone counts as deleted."""
        async with self._locked(disk_id):
            self._refuse_if_held(disk_id, "delete the disk")
            await trio.to_thread.run_sync(self.pool.delete_disk, disk_id)
        if not self._locks[disk_id].statistics().tasks_waiting:
            del self._locks[disk_id]

    # -- snapshots --------------------------------------------------------

    async def snapshot(self, disk_id: str, snapshot_id: str, force: bool) -> bool:
        """Take a snapshot; True if the filesystem had to be frozen for it."""
        async with self._locked(disk_id):
            disk = self._require_disk(disk_id)
            final = self.pool.snapshot(disk_id, snapshot_id)
            if final.exists():
                raise errors.Conflict(f"snapshot {snapshot_id} already exists", code="snapshot_exists")
            async with self._still(disk_id, force, "snapshot the disk") as frozen:
                await self._produce(final, lambda path: self.pool.copy(disk, path), self.op_timeout)
            return frozen

    async def restore(self, disk_id: str, snapshot_id: str) -> None:
        """Replace the disk's content with the snapshot's (the snapshot stays)."""
        async with self._locked(disk_id):
            self._require_disk(disk_id)
            source = self._require_snapshot(disk_id, snapshot_id)
            self._refuse_if_held(disk_id, "restore the disk")
            await self._produce(self.pool.disk(disk_id), lambda path: self.pool.copy(source, path), self.op_timeout)

    async def delete_snapshot(self, disk_id: str, snapshot_id: str) -> None:
        async with self._locked(disk_id):
            await trio.to_thread.run_sync(self.pool.delete_snapshot, disk_id, snapshot_id)

    # -- sandboxes --------------------------------------------------------

    async def attach(self, disk_id: str, sandbox_id: str) -> Path:
        """Mount the disk for ``sandbox_id``; the host directory to bind into it."""
        async with self._locked(disk_id):
            disk = self._require_disk(disk_id)
            self._refuse_if_held(disk_id, "attach the disk")
            target = self.mount_point(sandbox_id)
            try:
                await mounts.mount_disk(disk, target)
            except mounts.MountError as exc:
                log.warning("mounting disk %s failed: %s", disk_id, exc, extra={"session_id": sandbox_id})
                raise errors.Unavailable("the workspace disk could not be mounted", code="mount_failed") from None
            self._holders[disk_id] = sandbox_id
            return target

    async def attach_device(self, disk_id: str, sandbox_id: str, freezer: Freezer) -> Path:
        """Give the disk to ``sandbox_id`` as a whole device; the disk file to attach.

        ``freezer`` is how a forced snapshot or clone holds the filesystem
        still while the sandbox has it.
        """
        async with self._locked(disk_id):
            disk = self._require_disk(disk_id)
            self._refuse_if_held(disk_id, "attach the disk")
            self._holders[disk_id] = sandbox_id
            self._freezers[sandbox_id] = freezer
            return disk

    async def detach(self, sandbox_id: str) -> None:
        """Unmount whatever ``sandbox_id`` holds; idempotent.

        Waits for an operation in flight on the disk (a frozen snapshot)
        for as long as one may take, since unmounting under it would fail.
        """
        held = [disk for disk, holder in self._holders.items() if holder == sandbox_id]
        async with self._locked(*held, wait=self.op_timeout):
            await mounts.unmount(self.mount_point(sandbox_id))
            for disk_id in held:
                if self._holders.get(disk_id) == sandbox_id:  # a concurrent detach may have been first
                    del self._holders[disk_id]
            self._freezers.pop(sandbox_id, None)

    # -- recovery ---------------------------------------------------------

    async def recover(self, adopted: dict[str, str], devices: dict[str, Freezer] | None = None) -> None:
        """After a restart: keep the mounts of ``adopted`` sandboxes (sandbox -> disk), remove all else.

        ``devices`` are the adopted sandboxes that hold their disk as a
        device (a VM), with their freezers: they have no mount to keep.

        A crash during a forced snapshot could leave an adopted mount
        frozen: it is thawed. Stray mounts go first, then the loop devices
        only they held, then half-made files.
        """
        self._holders = {disk: sandbox for sandbox, disk in adopted.items()}
        self._freezers = dict(devices or {})
        for target in mounts.mounts_under(self.mounts_dir):
            if target.parent == self.mounts_dir and target.name in adopted:
                await mounts.thaw(target)
                continue
            log.info("removing stray mount %s", target)
            await mounts.unmount(target)
        # A device still in use is only flagged autoclear by this, which
        # those of adopted mounts already are; the unused ones go now.
        for device in await mounts.loops_backed_under(self.pool.root):
            log.info("detaching stray loop device %s", device)
            with contextlib.suppress(mounts.MountError):
                await mounts.detach_loop(device)
        for path in self.mounts_dir.iterdir():
            if path.name not in adopted:
                with contextlib.suppress(OSError):
                    path.rmdir()
        await trio.to_thread.run_sync(self.pool.clear_staging)

    def info(self) -> dict[str, object]:
        return self.pool.usage()
