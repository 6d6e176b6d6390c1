"""Each VM's QEMU runs jailed: its own uid, no privileges, seccomp, a mount namespace of its own files.

Checked from the host, as an operator would: ``/proc/<pid>/status``,
``mountinfo`` and the files reachable under ``/proc/<pid>/root`` of the
QEMU of a booted VM and of a fork of it (which shares the paused source's
frozen disk, read-only), beside a container session on the same agent.
"""

from __future__ import annotations

import os
import secrets
from functools import partial
from pathlib import Path
from typing import Any

import lxc
import trio

import vmimages
import vmimages.bundle
from agent.runtimes.qemu.jail import SANDBOX, VmUids
from tests.conftest import VM_AGENT, System, live_qemus, start_system, stop_system
from tests.test_isolation import new_session
from tests.test_vm_snapshots import VM_IMAGE, create_vm, exec_in

# The files a VM's QEMU may see besides its own and its disks' (under /usr: programs and libraries).
SYSTEM_FILES = {"/etc/ld.so.cache", "/dev/null", "/dev/urandom", "/dev/net/tun"}


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def qemu_of(system: System, session_id: str) -> int:
    [pid] = live_qemus(f"chaser-{session_id}")
    assert pid in system.vms()
    return pid


def visible_files(pid: int) -> dict[str, bool]:
    """Every file QEMU's root holds outside /usr (symlinks aside), and whether QEMU's namespace lets it be written."""
    root = f"/proc/{pid}/root"
    found: dict[str, bool] = {}
    for directory, dirs, files in os.walk(root):
        if directory == root:
            dirs.remove("usr")
        for name in files:
            host = os.path.join(directory, name)
            if not os.path.islink(host):
                # Even for root, access() refuses to write to a read-only mount.
                found["/" + os.path.relpath(host, root)] = os.access(host, os.W_OK)
    return found


def check_jailed(system: System, session: dict[str, Any], pid: int, shared: set[str]) -> int:
    """Assert QEMU ``pid`` of ``session`` is jailed; ``shared`` are the disks it may read. Returns its uid."""
    info = status(pid)
    uids, gids = info["Uid"].split(), info["Gid"].split()
    uid = int(uids[0])
    assert uid != 0 and uids == [str(uid)] * 4 and gids == [str(uid)] * 4, info
    config = system.agent.config
    assert config.vm_uid_first <= uid < config.vm_uid_first + config.vm_uid_count
    assert info["Groups"] == ""
    assert info["NoNewPrivs"] == "1"
    assert info["Seccomp"] == "2"  # a filter: QEMU's -sandbox
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert info[caps] == "0000000000000000", caps
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"-sandbox") + 1] == SANDBOX.encode()
    # Nothing of the agent's environment (where its credentials could be); bwrap sets PWD.
    environ = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")) - {b""}
    assert environ == {b"PATH=/usr/bin:/bin", b"PWD=/"}

    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    mounts = {line.split()[4]: line.split()[5] for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()}
    assert "ro" in mounts["/"].split(",")
    assert not {"/root", "/home", "/proc", "/sys", "/tmp", "/run"} & set(mounts)
    home = system.qemu_path / "sandboxes" / session["id"]
    for point in mounts:
        assert not point.startswith(str(config.state_dir)) or point.startswith(f"{home}/") or point in shared, point
    recipe = vmimages.resolve(VM_IMAGE)
    assert recipe is not None
    image = {str(p) for p in vmimages.root_of(system.agent.config.images_dir, recipe).parent.iterdir()}
    agent_disk = str(vmimages.bundle.disk(vmimages.bundle.build(system.agent.config.images_dir)))
    own = {f"{home}/disk.qcow2", f"{home}/console.log"}
    files = visible_files(pid)
    assert own | {agent_disk} <= set(files) <= SYSTEM_FILES | image | {agent_disk} | own | shared, sorted(files)
    writable = {path for path, can in files.items() if can}
    assert writable - {"/dev/null", "/dev/urandom", "/dev/net/tun"} == own
    for path in own:
        assert (os.stat(path).st_uid, os.stat(path).st_mode & 0o777) == (uid, 0o600), path
    return uid


def container_uids(system: System, session_id: str) -> set[int]:
    """The host uids the processes of a container session run as."""
    init = lxc.Container(session_id, config_path=str(system.lxc_path)).init_pid
    namespace = os.readlink(f"/proc/{init}/ns/pid")
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns/pid") == namespace:
                found.add(int(status(int(entry.name))["Uid"].split()[0]))
        except OSError:
            continue
    return found


async def test_each_vm_runs_jailed_as_its_own_user(vm_system: System) -> None:
    container = await new_session(vm_system, image="default")
    source = await create_vm(vm_system)
    await exec_in(vm_system, source["id"], "echo from-the-source > /root/shared")
    assert (await vm_system.client.post(f"/v1/sessions/{source['id']}/pause")).status_code == 200
    forked = await vm_system.client.post(f"/v1/sessions/{source['id']}/fork")
    assert forked.status_code == 201, forked.text
    fork = forked.json()
    assert (await vm_system.client.post(f"/v1/sessions/{source['id']}/resume")).status_code == 200
    assert (await exec_in(vm_system, fork["id"], "cat /root/shared"))["output"] == "from-the-source\n"

    # The paused source's disk became a base both now read, as the one file of bases/ either sees.
    [base] = (vm_system.qemu_path / "bases").iterdir()
    uids = {
        check_jailed(vm_system, session, qemu_of(vm_system, session["id"]), {str(base)}) for session in (source, fork)
    }
    assert (os.stat(base).st_uid, os.stat(base).st_mode & 0o777) == (0, 0o444)
    assert len(uids) == 2, "two VMs share a uid"
    assert not uids & container_uids(vm_system, container["id"])
    # The sockets the agent talks to QEMU by are the agent's own, not in QEMU's reach.
    for sock in vm_system.qemu_run_dir.iterdir():
        assert os.stat(sock).st_uid == 0
    for pid in vm_system.vms():
        assert status(pid)["Uid"].split()[0] != "0"
    for session in (container, source, fork):
        await vm_system.client.delete(f"/v1/sessions/{session['id']}")


async def test_a_uid_is_claimed_until_a_process_runs_as_it(tmp_path: Path) -> None:
    """Claims are serialised host-wide; a uid a live process has is never handed out again."""
    # A range of its own, that no agent's VMs use meanwhile.
    uids = VmUids(first=4_000_000_000 + 4 * secrets.randbelow(1 << 16), count=4, lock=tmp_path / "uids.lock")
    async with trio.open_nursery() as nursery:
        async with uids.claim() as first:
            assert first == uids.first
            argv = ["setpriv", f"--reuid={first}", f"--regid={first}", "--clear-groups", "sleep", "30"]
            process = await nursery.start(partial(trio.run_process, argv, check=False))
            with trio.fail_after(5):
                while status(process.pid)["Uid"].split()[0] != str(first):
                    await trio.sleep(0.01)
        async with uids.claim() as second:
            assert second != first
            with trio.move_on_after(0.3) as waited:  # another claim waits for this one
                async with uids.claim():
                    pass
            assert waited.cancelled_caught
        process.kill()
    async with uids.claim() as again:
        assert again == first


async def test_an_operator_can_refuse_vms_under_tcg(nursery: trio.Nursery, tmp_path: Path, vm_images_dir: Path) -> None:
    system = await start_system(
        nursery,
        tmp_path,
        vm_images_dir,
        f"sqlite:///{tmp_path / 'db'}",
        agent_overrides={**VM_AGENT, "vm_allow_tcg": False},
    )
    try:
        headers = {"Authorization": f"Bearer {system.token}"}
        host = (await system.client.get(system.agent.url + "/v1/host", headers=headers)).json()
        qemu = host["runtime_info"]["qemu"]
        if qemu["accel"] != "tcg":
            assert qemu["refused"] is None
            return
        assert "vm_allow_tcg" in qemu["refused"]
        assert VM_IMAGE not in host["images"] and "default" in host["images"]
        # Through the scheduler: no host offers the image.
        refused = await system.client.post("/v1/sessions", json={"ephemeral": True, "image": VM_IMAGE})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_image", refused.text
        # At the agent itself: why.
        direct = await system.client.post(
            system.agent.url + "/v1/sandboxes",
            headers=headers,
            json={"id": "0b4f3c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f", "image": VM_IMAGE},
        )
        assert direct.status_code == 422 and direct.json()["error"]["code"] == "image_unavailable", direct.text
        assert "TCG" in direct.json()["error"]["message"]
        # Containers are unaffected.
        container = await new_session(system, image="default")
        await exec_in(system, container["id"], "true")
        await system.client.delete(f"/v1/sessions/{container['id']}")
    finally:
        await stop_system(system)
