"""The qemu runtime on its own: boot, processes, boot failures, cleanup. Real TCG guests."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import vmimages
import vmimages.bundle
from agent.runtimes.base import ProcessSpec, RuntimeFailure, SandboxGone, SandboxSpec
from agent.runtimes.execution import collect
from agent.runtimes.qemu import machine
from agent.runtimes.qemu.runtime import QemuRuntime
from tests.conftest import live_qemus
from vmimages.vm import VmImageFiles

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root"}


@pytest.fixture
def image(vm_images_dir: Path) -> SandboxSpec:
    recipe = vmimages.resolve("default-vm")
    assert recipe is not None
    return SandboxSpec(id="", image=recipe.name, rootfs=vmimages.root_of(vm_images_dir, recipe))


@pytest.fixture
async def runtime(
    nursery: trio.Nursery, tmp_path: Path, vm_images_dir: Path, image: SandboxSpec
) -> AsyncIterator[QemuRuntime]:
    files = VmImageFiles(image.rootfs)
    found = await machine.probe("qemu-system-x86_64", files.kernel, files.initrd, Path("/run/chaser/machine.json"))
    run_dir = Path("/run/chaser") / f"test-{uuid.uuid4().hex[:8]}"
    bundle = vmimages.bundle.build(vm_images_dir)
    qemu = QemuRuntime(tmp_path / "qemu", run_dir, found, bundle=bundle, memory_mb=256, vcpus=1)
    await nursery.start(qemu.run)
    try:
        yield qemu
    finally:
        with trio.CancelScope(shield=True):
            for sandbox_id in await qemu.leftovers():
                await qemu.destroy(sandbox_id)
        assert live_qemus(tmp_path / "qemu") == [], "QEMU left running"
        assert not run_dir.exists(), "sockets left behind"
        for leftover in (tmp_path / "qemu/sandboxes", tmp_path / "qemu/bases"):
            assert list(leftover.iterdir()) == [], leftover


def spec(image: SandboxSpec) -> SandboxSpec:
    return SandboxSpec(id=str(uuid.uuid4()), image=image.image, rootfs=image.rootfs)


async def run(runtime: QemuRuntime, sandbox_id: str, script: str, *, timeout: float = 60) -> tuple[int, str, bool]:
    process = await runtime.spawn(sandbox_id, ProcessSpec(argv=["sh", "-c", script], env=ENV))
    result = await collect(process, timeout, 1 << 20)
    return result.exit_code, result.output, result.timed_out


async def test_boot_exec_and_destroy(runtime: QemuRuntime, image: SandboxSpec) -> None:
    sandbox = spec(image)
    await runtime.create(sandbox)
    await runtime.start(sandbox.id)
    assert await runtime.running() == {sandbox.id}

    assert await run(runtime, sandbox.id, "echo out; echo err >&2; exit 3") == (3, "out\nerr\n", False)
    # Separate streams, both delivered in full, beyond one flow-control window.
    process = await runtime.spawn(
        sandbox.id, ProcessSpec(argv=["sh", "-c", "seq 1 200000; echo oops >&2"], env=ENV, merge_stderr=False)
    )
    assert process.stderr is not None
    out, err = bytearray(), bytearray()

    async def drain(stream: trio.abc.ReceiveStream, sink: bytearray) -> None:
        while chunk := await stream.receive_some():
            sink += chunk

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain, process.stdout, out)
        nursery.start_soon(drain, process.stderr, err)
        assert await process.wait() == 0
    await process.aclose()
    assert out.decode().splitlines() == [str(i) for i in range(1, 200001)]
    assert err == b"oops\n"

    # A timeout kills the whole process group, not just the shell.
    code, output, timed_out = await run(runtime, sandbox.id, "echo started; sleep 300 | cat", timeout=1)
    assert (code, output, timed_out) == (137, "started\n", True)
    _, ps, _ = await run(runtime, sandbox.id, "ps -eo args=")
    assert "sleep 300" not in ps

    code, output, _ = await run(runtime, sandbox.id, "exec no-such-program")
    assert code == 127 and "no-such-program" in output
    missing = await runtime.spawn(sandbox.id, ProcessSpec(argv=["no-such-program"], env=ENV))
    assert (await collect(missing, 60, 1024)).exit_code == 127

    # Writes land in the session's own disk, never in the image.
    assert (await run(runtime, sandbox.id, "echo hi > /root/note && cat /root/note"))[1] == "hi\n"
    await runtime.destroy(sandbox.id)
    assert await runtime.running() == set()
    assert await runtime.leftovers() == set()
    with pytest.raises(SandboxGone):
        await runtime.spawn(sandbox.id, ProcessSpec(argv=["true"], env=ENV))


async def test_the_guest_agent_runs_from_the_bundle_not_the_image(runtime: QemuRuntime, image: SandboxSpec) -> None:
    """PID 1 is the bundle's loader and Python, read-only at /.chaser: no code of the image's is mapped into it."""
    sandbox = spec(image)
    await runtime.create(sandbox)
    await runtime.start(sandbox.id)
    script = (
        "tr '\\0' ' ' < /proc/1/cmdline; echo; readlink /proc/1/exe; cat /proc/1/comm; ls /.chaser/bin/python3; "
        "grep ' /.chaser ' /proc/mounts | cut -d' ' -f3,4; grep '[.]so' /proc/1/maps | grep -vc ' /[.]chaser/'"
    )
    code, output, _ = await run(runtime, sandbox.id, script)
    assert code == 1, output  # grep -c found no library from elsewhere
    cmdline, exe, comm, python, mount, elsewhere = output.splitlines()
    assert cmdline.split() == [
        "/.chaser/lib/ld-linux-x86-64.so.2", "--library-path", "/.chaser/lib",
        "/.chaser/bin/python3", "-S", "-P", "-B", "-m", "vmimages.guest.agent",
    ]  # fmt: skip
    assert exe.startswith("/.chaser/lib/ld-linux-x86-64.so")
    assert (comm, python, elsewhere) == ("chaser-sandbox", "/.chaser/bin/python3", "0")
    fstype, options = mount.split()
    assert fstype == "erofs" and {"ro", "nosuid", "nodev"} <= set(options.split(","))
    await runtime.destroy(sandbox.id)


async def test_a_process_signalled_in_the_guest_reports_128_plus_signal(
    runtime: QemuRuntime, image: SandboxSpec
) -> None:
    sandbox = spec(image)
    await runtime.create(sandbox)
    await runtime.start(sandbox.id)
    process = await runtime.spawn(sandbox.id, ProcessSpec(argv=["sleep", "100"], env=ENV))
    process.kill(signal.SIGTERM)
    with trio.fail_after(30):
        assert await process.wait() == 128 + signal.SIGTERM
    await process.aclose()


async def test_a_guest_that_cannot_mount_its_root_panics_and_is_reported(
    runtime: QemuRuntime, image: SandboxSpec, tmp_path: Path
) -> None:
    """A broken image disk: init fails, the kernel panics, QEMU exits; we say why."""
    broken = tmp_path / "broken-image"
    broken.mkdir()
    real = VmImageFiles(image.rootfs)
    for part in (real.kernel, real.initrd, real.scratch):
        os.symlink(part, broken / part.name)
    (broken / "rootfs.erofs").write_bytes(b"\0" * (1 << 20))
    sandbox = SandboxSpec(id=str(uuid.uuid4()), image=image.image, rootfs=broken / "rootfs.erofs")
    await runtime.create(sandbox)
    with pytest.raises(RuntimeFailure) as failure:
        with trio.fail_after(120):
            await runtime.start(sandbox.id)
    assert "the guest kernel panicked" in str(failure.value)
    assert "cannot mount the image disk" in str(failure.value)
    assert await runtime.running() == set()
    await runtime.destroy(sandbox.id)
    shutil.rmtree(broken)


async def test_a_qemu_that_cannot_start_is_reported_with_its_error(
    runtime: QemuRuntime, image: SandboxSpec, tmp_path: Path
) -> None:
    """QEMU's (or its jail's) last word on stderr says why; nothing is left running."""
    broken = tmp_path / "no-kernel"
    broken.mkdir()
    real = VmImageFiles(image.rootfs)
    for part in (real.disk, real.initrd, real.scratch):
        os.symlink(part, broken / part.name)
    os.symlink(broken / "missing", broken / real.kernel.name)
    sandbox = SandboxSpec(id=str(uuid.uuid4()), image=image.image, rootfs=broken / real.disk.name)
    await runtime.create(sandbox)
    with pytest.raises(RuntimeFailure) as failure, trio.fail_after(30):
        await runtime.start(sandbox.id)
    assert "did not start" in str(failure.value) and "vmlinuz" in str(failure.value)
    assert live_qemus(runtime.sandboxes_dir) == [] and await runtime.running() == set()
    await runtime.destroy(sandbox.id)
    assert await runtime.leftovers() == set()


@pytest.mark.parametrize("after", [0.0, 0.5, 2.0])
async def test_a_cancelled_boot_leaves_no_qemu(runtime: QemuRuntime, image: SandboxSpec, after: float) -> None:
    """A hung or too-slow boot is cut off by the caller's deadline: QEMU goes at once."""
    sandbox = spec(image)
    await runtime.create(sandbox)
    with trio.move_on_after(after) as deadline:
        await runtime.start(sandbox.id)
    assert deadline.cancelled_caught
    assert live_qemus(runtime.sandboxes_dir) == []
    assert await runtime.running() == set()
    await runtime.destroy(sandbox.id)
    assert await runtime.leftovers() == set()


async def test_a_frozen_workspace_holds_writes_until_thawed(
    runtime: QemuRuntime, image: SandboxSpec, tmp_path: Path
) -> None:
    """The guest mounts a disk given whole at /workspace; ``frozen`` blocks writers inside until the block ends."""
    disk = tmp_path / "workspace.img"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    await trio.run_process(["mkfs.ext4", "-q", str(disk)])
    sandbox = dataclasses.replace(spec(image), workspace_disk=disk)
    await runtime.create(sandbox)
    await runtime.start(sandbox.id)
    assert (await run(runtime, sandbox.id, "findmnt -no FSTYPE /workspace"))[1] == "ext4\n"
    async with runtime.frozen(sandbox.id, "/workspace"):
        writer = await runtime.spawn(
            sandbox.id, ProcessSpec(argv=["sh", "-c", "echo held > /workspace/f && sync"], env=ENV)
        )
        with trio.move_on_after(3) as waited:
            await writer.wait()
        assert waited.cancelled_caught, "a write went through a frozen filesystem"
    with trio.fail_after(30):
        assert await writer.wait() == 0
    await writer.aclose()
    assert (await run(runtime, sandbox.id, "cat /workspace/f"))[1] == "held\n"
    await runtime.destroy(sandbox.id)  # the guest syncs first: the file is on the disk
    await trio.run_process(["e2fsck", "-fn", str(disk)], capture_stdout=True)
    listed = await trio.run_process(["debugfs", "-R", "cat /f", str(disk)], capture_stdout=True, capture_stderr=True)
    assert listed.stdout == b"held\n"
