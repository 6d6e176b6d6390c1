"""VM sessions end to end: the public API, the scheduler, the agent, a real QEMU guest."""

from __future__ import annotations

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
    assert lines[1].strip() == "/usr/bin/python3 -S -m vmimages.guest.agent"
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
