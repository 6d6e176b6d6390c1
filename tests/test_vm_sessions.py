"""VM sessions end to end: the public API, the scheduler, the agent, a real QEMU guest."""

from __future__ import annotations

import os

from agent.runtimes.limits import cgroup_settings, unified_hierarchy
from agent.runtimes.qemu import cgroup as qemu_cgroup
from chaser.wire.isolation import Limits
from tests.conftest import System, wait_until

VM_IMAGE = "debian:bookworm-vm"


async def test_one_shot_exec_runs_inside_a_qemu_guest(vm_system: System) -> None:
    host = (await system_host(vm_system))["runtime_info"]
    assert host["qemu"]["accel"] in ("kvm", "tcg")
    response = await vm_system.client.post(
        "/v1/exec",
        json={
            "ephemeral": True,
            "image": VM_IMAGE,
            # The guest's own kernel (Debian's cloud kernel, not the host's),
            # the overlay root, and the disk serials only a VM has.
            "command": "uname -r; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
            "findmnt -no FSTYPE /; cat /sys/block/vda/serial; echo; python3 -c 'print(6*7)'",
            "timeout_ms": 120_000,
        },
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["exit_code"] == 0, result
    lines = result["output"].splitlines()
    assert lines[0].endswith("-cloud-amd64")
    assert lines[1].strip().startswith("/.chaser/lib/ld-linux-x86-64.so.2 --library-path /.chaser/lib ")
    assert lines[2:] == ["overlay", "chaser-image", "42"]
    session = (await vm_system.client.get(f"/v1/sessions/{result['session_id']}")).json()
    assert session["status"] == "terminated" and session["image"] == VM_IMAGE

    async def gone() -> bool:
        return not vm_system.vms() and not vm_system.leftovers()

    await wait_until(gone)


async def system_host(system: System) -> dict[str, object]:
    """The agent's own host info, as the scheduler's heartbeat receives it."""
    response = await system.client.get(
        system.agent.url + "/v1/host", headers={"Authorization": f"Bearer {system.token}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_vm_gets_its_limits_and_its_qemu_runs_in_their_cgroup(vm_system: System) -> None:
    response = await vm_system.client.post(
        "/v1/sessions", json={"ephemeral": True, "image": VM_IMAGE, "limits": {"cpus": 1.5, "memory_mb": 320}}
    )
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["limits"]["cpus"] == 1.5 and session["limits"]["memory_mb"] == 320
    # The guest has the RAM and (rounded up) the CPUs asked for; it can fill much of its RAM.
    inside = await exec_ok(
        vm_system,
        session["id"],
        "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; python3 -c 'b = bytearray(160 << 20); print(len(b) >> 20)'",
    )
    cpus, mem_kb, filled = inside.split()
    assert int(cpus) == min(2, os.cpu_count() or 1)
    assert 200 << 10 < int(mem_kb) <= 320 << 10
    assert filled == "160"
    # Asking for more than it has ends in the guest's own OOM killer: the VM (its QEMU) lives on.
    over = await vm_system.client.post(
        "/v1/exec",
        json={"session_id": session["id"], "command": "python3 -c 'b = bytearray(400 << 20)'", "timeout_ms": 120_000},
    )
    assert over.status_code == 200 and over.json()["exit_code"] != 0, over.text
    # QEMU sits in the session's cgroup, limited to the guest's RAM plus its own overhead.
    pid = int((vm_system.qemu_path / "sandboxes" / session["id"] / "qemu.pid").read_text())
    dirs = qemu_cgroup.cgroup_dirs(session["id"])
    assert all(str(pid) in (d / "cgroup.procs").read_text().split() for d in dirs)
    settings = dict(cgroup_settings(Limits(cpus=1.5, memory_mb=320 + 320, pids=256), unified=unified_hierarchy()))
    for name, value in settings.items():
        directory = dirs[0] if unified_hierarchy() else dirs[0].parent.parent / name.split(".")[0] / dirs[0].name
        assert (directory / name).read_text().split() == value.split(), name
    assert await exec_ok(vm_system, session["id"], "echo still-here") == "still-here\n"
    await vm_system.client.delete(f"/v1/sessions/{session['id']}")
    assert not any(d.exists() for d in dirs), "the VM's cgroup is removed with it"


async def exec_ok(system: System, session_id: str, command: str) -> str:
    response = await system.client.post(
        "/v1/exec", json={"session_id": session_id, "command": command, "timeout_ms": 120_000}
    )
    assert response.status_code == 200, response.text
    assert response.json()["exit_code"] == 0, response.json()
    output: str = response.json()["output"]
    return output
