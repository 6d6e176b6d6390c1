"""The agent's disks on a real pool: all-or-nothing operations, holders, reflink or copy."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import vmimages.bundle
from agent.runtimes.lxc.runtime import LxcRuntime
from agent.sandboxes.images import ImageStore
from agent.sandboxes.manager import SandboxManager
from agent.storage import mounts
from agent.storage.disks import DiskManager
from agent.storage.pool import StoragePool
from chaser.wire import errors
from tests.pools import loops_of

GiB = 1 << 30


@pytest.fixture
async def disks(tmp_path: Path, pool: Path) -> AsyncIterator[DiskManager]:
    manager = DiskManager(StoragePool(pool / "storage"), tmp_path / "mounts", op_timeout=60, import_timeout=60)
    yield manager
    for target in mounts.mounts_under(manager.mounts_dir):
        await mounts.unmount(target)


def _left(manager: DiskManager) -> tuple[list[Path], list[Path]]:
    """Staging files and mounts: what an interrupted operation must not leave."""
    return list(manager.pool.staging_dir.iterdir()), mounts.mounts_under(manager.mounts_dir)


def _new_id() -> str:
    return str(uuid.uuid4())


async def _stalls(root: Path) -> None:
    """A disk's content that never comes (a clone from a stalled Git host)."""
    (root / "partial").write_text("half")
    await trio.sleep_forever()


async def test_operations_refused_while_held(disks: DiskManager) -> None:
    disk, sandbox, snapshot = _new_id(), _new_id(), _new_id()
    await disks.create(disk, GiB)
    await disks.snapshot(disk, snapshot, force=False)
    mounted = await disks.attach(disk, sandbox)
    (mounted / "file").write_text("x")
    for call in (
        disks.attach(disk, _new_id()),
        disks.restore(disk, snapshot),
        disks.delete(disk),
        disks.snapshot(disk, _new_id(), force=False),
        disks.clone(_new_id(), disk, None, force=False),
        disks.fill(disk, GiB, _stalls, replace=True),
    ):
        with pytest.raises(errors.Conflict) as refused:
            await call
        assert refused.value.code == "disk_in_use" and sandbox in refused.value.message
    assert await disks.snapshot(disk, _new_id(), force=True) is True
    (mounted / "file").write_text("thawed")  # would block if the freeze outlived the snapshot
    await disks.detach(sandbox)
    assert _left(disks) == ([], [])
    with pytest.raises(errors.Conflict):
        await disks.create(disk, GiB)


@pytest.mark.parametrize("delay", [0.0, 0.003, 0.01, 0.03, 0.1])
async def test_cancelled_operations_leave_nothing_half_made(disks: DiskManager, delay: float) -> None:
    source, sandbox = _new_id(), _new_id()
    await disks.create(source, GiB)
    await disks.attach(source, sandbox)
    made: list[str] = []
    for operation in ("create", "clone", "snapshot"):
        target = _new_id()
        with trio.move_on_after(delay):
            if operation == "create":
                await disks.create(target, GiB)
            elif operation == "clone":
                await disks.clone(target, source, None, force=True)
            else:
                await disks.snapshot(source, target, force=True)
        path = disks.pool.snapshot(source, target) if operation == "snapshot" else disks.pool.disk(target)
        if path.exists():
            made.append(operation)
    # Whatever finished is whole and was committed; nothing is half-way.
    assert list(disks.pool.staging_dir.iterdir()) == []
    assert mounts.mounts_under(disks.mounts_dir) == [disks.mount_point(sandbox)]
    (disks.mount_point(sandbox) / "still-writable").write_text("yes")  # no freeze outlived its cancel
    await disks.detach(sandbox)
    assert _left(disks) == ([], [])
    assert await disks.attach(source, sandbox)  # the holder was released
    await disks.detach(sandbox)


async def test_cancelled_import_leaves_nothing(disks: DiskManager) -> None:
    with trio.move_on_after(0.5):
        await disks.fill(_new_id(), GiB, _stalls, replace=False)
    assert list(disks.pool.disks_dir.iterdir()) == []
    assert _left(disks) == ([], [])
    assert loops_of(disks.pool.root) == []


async def test_cancelled_workspace_sandbox_create_leaves_no_mount(
    tmp_path: Path, images_dir: Path, disks: DiskManager, nursery: trio.Nursery
) -> None:
    disk = _new_id()
    await disks.create(disk, GiB)
    runtime = LxcRuntime(tmp_path / "lxc", vmimages.bundle.build(images_dir))
    await nursery.start(runtime.run)
    manager = SandboxManager(
        runtime, ImageStore(images_dir), tmp_path, max_sandboxes=4, start_timeout=30, output_limit=1 << 20, disks=disks
    )
    for delay in (0.0, 0.005, 0.02, 0.05, 0.1):
        with trio.move_on_after(delay):
            await manager.create(_new_id(), "default", disk)
        await manager.destroy_all()
        assert await runtime.leftovers() == set()
        assert _left(disks) == ([], [])
        assert disks.holder(disk) is None
    assert loops_of(disks.pool.root) == []


async def test_sparse_copy_where_there_is_no_reflink(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    manager = DiskManager(StoragePool(tmp_path / "plain"), tmp_path / "mounts", op_timeout=60, import_timeout=60)
    assert manager.pool.reflink is False  # /tmp here is ext4
    assert "no reflink support" in caplog.text
    disk, sandbox = _new_id(), _new_id()
    await manager.create(disk, GiB)
    (await manager.attach(disk, sandbox) / "data").write_text("copied")
    await manager.detach(sandbox)
    clone = _new_id()
    await manager.clone(clone, disk, None, force=False)
    assert os.stat(manager.pool.disk(clone)).st_blocks * 512 < 64 << 20  # sparse, not 1 GiB
    assert (await manager.attach(clone, sandbox) / "data").read_text() == "copied"
    await manager.detach(sandbox)
    assert _left(manager) == ([], [])


async def test_reflink_clones_share_their_data(disks: DiskManager) -> None:
    assert disks.pool.reflink is True
    disk, sandbox = _new_id(), _new_id()
    await disks.create(disk, GiB)
    mounted = await disks.attach(disk, sandbox)
    (mounted / "blob").write_bytes(os.urandom(64 << 20))
    await disks.detach(sandbox)
    await trio.run_process(["sync"])

    def used() -> int:
        stat = os.statvfs(disks.pool.root)
        return (stat.f_blocks - stat.f_bfree) * stat.f_frsize

    before = used()
    for _ in range(3):
        await disks.clone(_new_id(), disk, None, force=False)
        await disks.snapshot(disk, _new_id(), force=False)
    assert used() - before < 16 << 20  # six copies of 64 MiB, sharing it all
