"""The QEMU command line of a sandbox VM, and where its files live.

Kept apart from the runtime so that a cold boot and a restore from a
snapshot are sure to build the *same* machine (a migration stream only loads
into an identical device model); the only difference is ``-incoming``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.runtimes.machine import Machine

# Serial console on ttyS0; panic=-1 reboots at once on a panic, and QEMU
# runs with -no-reboot, so a panicking guest ends its QEMU.
KERNEL_CMDLINE = "console=ttyS0 panic=-1 quiet 8250.nr_uarts=1"


@dataclass(frozen=True)
class VmConfig:
    """What a VM is made of; saved as ``vm.json`` so a restore rebuilds it exactly."""

    image: str
    image_disk: str  # the image's read-only erofs disk
    kernel: str
    initrd: str
    memory_mb: int
    vcpus: int
    machine: Machine

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> VmConfig:
        raw = json.loads(text)
        return cls(**{**raw, "machine": Machine(**raw["machine"])})


class VmPaths:
    """A sandbox's files: ``<sandboxes>/<id>/`` and its sockets in the short run dir.

    Unix socket paths are limited to 108 bytes, and state dirs (a test's
    tmp_path) can be long, so sockets live in a per-agent dir under /run.
    ``memory.snap`` exists while the sandbox is paused (or about to start
    from a snapshot); ``disk.frozen`` marks a disk that is still an empty
    overlay over a base, so forking again needs no new base.
    """

    def __init__(self, sandboxes: Path, run: Path, sandbox_id: str) -> None:
        self.id = sandbox_id
        self.home = sandboxes / sandbox_id
        self.config = self.home / "vm.json"
        self.disk = self.home / "disk.qcow2"
        self.frozen = self.home / "disk.frozen"
        self.console = self.home / "console.log"
        self.pidfile = self.home / "qemu.pid"
        self.memory = self.home / "memory.snap"
        self.qmp = run / f"{sandbox_id}.qmp"
        self.guest = run / f"{sandbox_id}.guest"

    @property
    def sockets(self) -> tuple[Path, Path]:
        return (self.qmp, self.guest)

    @property
    def name(self) -> str:
        """The ``-name`` of its QEMU, how a live process is recognised as ours."""
        return f"chaser-{self.id}"


def _opt(path: Path | str) -> str:
    """A path inside a QEMU option list, where a comma is written twice."""
    return str(path).replace(",", ",,")


def qemu_argv(qemu: str, config: VmConfig, paths: VmPaths, *, incoming: bool = False) -> list[str]:
    """The daemonizing QEMU command for the sandbox, cold or restoring (``incoming``)."""
    m = config.machine
    argv = [
        qemu, "-name", paths.name,
        "-machine", f"{m.machine},accel={m.accel}", "-cpu", m.cpu,
        "-m", str(config.memory_mb), "-smp", str(config.vcpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        # No network device at all: a guest reaches nothing but its host agent.
        "-nic", "none",
        "-kernel", config.kernel, "-initrd", config.initrd, "-append", KERNEL_CMDLINE,
        "-chardev", f"file,id=console,path={_opt(paths.console)},append=on", "-serial", "chardev:console",
        "-drive", f"file={_opt(config.image_disk)},format=raw,if=none,id=image,readonly=on",
        "-device", f"virtio-blk-{m.bus},drive=image,serial=chaser-image",
        "-drive", f"file={_opt(paths.disk)},format=qcow2,if=none,id=disk,discard=unmap",
        "-device", f"virtio-blk-{m.bus},drive=disk,serial=chaser-rw",
        "-device", f"virtio-serial-{m.bus},id=serial",
        "-chardev", f"socket,id=guest,path={_opt(paths.guest)},server=on,wait=off",
        "-device", "virtserialport,bus=serial.0,chardev=guest,name=chaser.0",
        "-chardev", f"socket,id=qmp,path={_opt(paths.qmp)},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-pidfile", str(paths.pidfile), "-daemonize",
    ]  # fmt: skip
    if incoming:
        argv += ["-incoming", "defer"]
    return argv
