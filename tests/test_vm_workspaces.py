"""Workspaces on VM sessions: the disk goes to the guest whole, files persist, snapshots stay consistent.

The host never mounts a disk a VM holds: the guest mounts it at /workspace.
A forced snapshot of a running VM's workspace freezes the filesystem inside
the guest; of a paused one, needs nothing. The guest syncs before its VM
ends, so what the last command wrote is on the disk for the next session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from agent.storage import mounts
from tests.conftest import VM_AGENT, System
from tests.workspace_support import exec_on, ok, start_workspace_system, stop_workspace_system

VM_IMAGE = "debian:bookworm-vm"


@pytest.fixture
async def vm_ws_system(nursery: trio.Nursery, tmp_path: Path, vm_images_dir: Path, pool: Path) -> AsyncIterator[System]:
    system = await start_workspace_system(
        nursery, tmp_path, vm_images_dir, f"sqlite:///{tmp_path / 'chaser.db'}", pool, agent_overrides=VM_AGENT
    )
    try:
        yield system
    finally:
        await stop_workspace_system(system, pool)  # no mount, no loop device of the pool left


async def test_workspace_files_persist_across_vm_sessions_and_snapshot_consistently(vm_ws_system: System) -> None:
    client = vm_ws_system.client
    created = ok(await client.post("/v1/workspaces", json={"name": "vm-project", "image": VM_IMAGE}), 201)
    assert created["image"] == VM_IMAGE
    first = ok(await client.post("/v1/sessions", json={"workspace": "vm-project"}), 201)
    wrote = await exec_on(
        vm_ws_system, {"session_id": first["id"]}, "pwd; echo one > note; findmnt -no FSTYPE,SOURCE /workspace"
    )
    assert wrote["exit_code"] == 0, wrote
    cwd, fstype, device = wrote["output"].split()
    assert (cwd, fstype) == ("/workspace", "ext4") and device.startswith("/dev/vd")
    assert mounts.mounts_under(vm_ws_system.lxc_path.parent / "mounts") == [], "the host mounted a disk its VM holds"

    # Forced while the VM runs: frozen inside the guest, so the write just made is in it; thawed after.
    one = ok(await client.post("/v1/workspaces/vm-project/snapshots", params={"force": "true"}, json={}), 201)
    assert one["taken_while_attached"] is True
    assert (await exec_on(vm_ws_system, {"session_id": first["id"]}, "echo two > note; cat note"))["output"] == "two\n"

    # Paused, the VM keeps its disk: a forced snapshot needs no freeze, a fork is refused, resume finds the file.
    assert ok(await client.post(f"/v1/sessions/{first['id']}/pause"))["status"] == "paused"
    ok(await client.post("/v1/workspaces/vm-project/snapshots", params={"force": "true"}, json={}), 201)
    refused = await client.post(f"/v1/sessions/{first['id']}/fork")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "fork_with_workspace"
    busy = await client.post("/v1/sessions", json={"workspace": "vm-project"})
    assert busy.status_code == 409, busy.text  # still the paused session's
    assert ok(await client.post(f"/v1/sessions/{first['id']}/resume"))["status"] == "running"
    assert (await exec_on(vm_ws_system, {"session_id": first["id"]}, "echo three >> note"))["exit_code"] == 0
    ok(await client.delete(f"/v1/sessions/{first['id']}"))

    # A second VM session finds what the first wrote last (synced before its VM ended).
    second = ok(await client.post("/v1/sessions", json={"workspace": created["id"]}), 201)
    read = await exec_on(vm_ws_system, {"session_id": second["id"]}, "cat /workspace/note")
    assert read["output"] == "two\nthree\n"
    ok(await client.delete(f"/v1/sessions/{second['id']}"))

    # The first snapshot holds what was written before it, whole.
    ok(await client.post(f"/v1/workspaces/vm-project/snapshots/{one['id']}/restore"))
    restored = await exec_on(vm_ws_system, {"workspace": "vm-project"}, "cat note")
    assert restored["output"] == "one\n"
