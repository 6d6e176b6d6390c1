"""The QEMU command line of a sandbox VM, and where its files live.

Kept apart from the runtime so that a cold boot and a restore from a
snapshot are sure to build the *same* machine (a migration stream only loads
into an identical device model); the only difference is ``-incoming``.
Every VM has a NIC, the same one: wired to a tap in the session's network
slot, or to nothing (a template, a VM without a slot), so that one
snapshot restores anywhere. Every VM has the in-sandbox agent's bundle as a
read-only disk (serial ``chaser-agent``), the same for all VMs made while
that bundle is the host's, and recorded in ``vm.json``. A workspace disk is an extra device, so a VM
with one boots cold (no template has it) and cannot be forked.

QEMU runs in the foreground inside its jail (``qemu_jail``), its seccomp
filter on, and is handed its sockets as listening fds the agent made.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from agent.runtimes.base import GuestNetwork
from agent.runtimes.qemu.jail import SANDBOX
from agent.runtimes.qemu.machine import Machine
from agent.runtimes.qemu.network import MAC, TAP

# Serial console on ttyS0; panic=-1 reboots at once on a panic, and QEMU
# runs with -no-reboot, so a panicking guest ends its QEMU.
KERNEL_CMDLINE = "console=ttyS0 panic=-1 quiet 8250.nr_uarts=1"
# Tells the initramfs to mount the disk with serial chaser-ws at /workspace.
WORKSPACE_FLAG = "chaser.workspace"
# TCG's translated-code cache (MiB): QEMU flushes it when full. Bounded, so
# QEMU's memory overhead is (see qemu_cgroup).
TCG_CACHE_MB = 128


@dataclass(frozen=True)
class VmConfig:
    """What a VM is made of; saved as ``vm.json`` so a restore rebuilds it exactly."""

    image: str
    image_disk: str  # the image's read-only erofs disk
    # The in-sandbox agent's bundle as a read-only erofs disk (``vmimages.bundle.disk``):
    # init starts the guest agent from it.
    agent_disk: str
    kernel: str
    initrd: str
    memory_mb: int
    vcpus: int
    machine: Machine
    # The session's network slot (QEMU runs in it), and the address the
    # guest takes there; None: a NIC wired to nothing.
    netns: str | None = None
    address: str | None = None
    gateway: str | None = None
    workspace_disk: str | None = None  # attached as virtio-blk, mounted at /workspace
    # What QEMU's cgroup enforces (``Limits`` as JSON); None: no cgroup.
    cgroup: dict[str, object] | None = None
    # The files under the VM's disk, top first, as the agent made them (a
    # base, a template's disk, the image's scratch disk): what QEMU's jail
    # holds read-only. Never read back from the disk's own header, which
    # the jailed QEMU can write.
    backing: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> VmConfig:
        raw = json.loads(text)
        return cls(**{**raw, "machine": Machine(**raw["machine"]), "backing": tuple(raw.get("backing", ()))})

    def hardware(self) -> str:
        """The machine as a guest sees it: what a snapshot can be restored into."""
        fields = (
            "image", "image_disk", "agent_disk", "kernel", "initrd", "memory_mb", "vcpus", "machine", "workspace_disk",
        )  # fmt: skip
        return json.dumps({name: asdict(self)[name] for name in fields}, sort_keys=True)

    @property
    def guest_network(self) -> GuestNetwork | None:
        if self.address is None or self.gateway is None:
            return None
        return GuestNetwork(address=IPv4Interface(self.address), gateway=IPv4Address(self.gateway))


class VmPaths:
    """A sandbox's files: ``<sandboxes>/<id>/`` and its sockets in the short run dir.

    Unix socket paths are limited to 108 bytes, and state dirs (a test's
    tmp_path) can be long, so sockets live in a per-agent dir under /run.
    ``memory.snap`` exists while the sandbox is paused (or about to start
    from a snapshot); ``disk.frozen`` marks a disk that is still an empty
    overlay over a base, so forking again needs no new base. The agent
    writes ``qemu.pid``; ``qemu.log`` is QEMU's stderr.
    """

    def __init__(self, sandboxes: Path, run: Path, sandbox_id: str) -> None:
        self.id = sandbox_id
        self.home = sandboxes / sandbox_id
        self.config = self.home / "vm.json"
        self.disk = self.home / "disk.qcow2"
        self.frozen = self.home / "disk.frozen"
        self.console = self.home / "console.log"
        self.pidfile = self.home / "qemu.pid"
        self.log = self.home / "qemu.log"
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


def qemu_argv(
    qemu: str, config: VmConfig, paths: VmPaths, *, qmp_fd: int, guest_fd: int, incoming: bool = False
) -> list[str]:
    """The QEMU command for the sandbox, cold or restoring (``incoming``), its
    QMP and guest channel sockets listening on ``qmp_fd`` and ``guest_fd``.

    Either way it starts stopped: cold with ``-S``, restoring with
    ``-incoming``; the runtime puts it in its cgroup first, then runs it.
    """
    m = config.machine
    accel = f"tcg,tb-size={TCG_CACHE_MB}" if m.accel == "tcg" else m.accel
    cmdline = KERNEL_CMDLINE + (f" {WORKSPACE_FLAG}" if config.workspace_disk else "")
    if config.netns is not None:
        netdev = f"tap,id=net,ifname={TAP},script=no,downscript=no,vnet_hdr=off"
    else:
        netdev = "hubport,id=net,hubid=0"
    argv = [
        qemu, "-name", paths.name,
        "-machine", m.machine, "-accel", accel, "-cpu", m.cpu,
        "-m", str(config.memory_mb), "-smp", str(config.vcpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-sandbox", SANDBOX,
        "-netdev", netdev, "-device", f"virtio-net-{m.bus},netdev=net,mac={MAC}",
        "-kernel", config.kernel, "-initrd", config.initrd, "-append", cmdline,
        "-chardev", f"file,id=console,path={_opt(paths.console)},append=on", "-serial", "chardev:console",
        "-drive", f"file={_opt(config.image_disk)},format=raw,if=none,id=image,readonly=on",
        "-device", f"virtio-blk-{m.bus},drive=image,serial=chaser-image",
        "-drive", f"file={_opt(config.agent_disk)},format=raw,if=none,id=agent,readonly=on",
        "-device", f"virtio-blk-{m.bus},drive=agent,serial=chaser-agent",
        "-drive", f"file={_opt(paths.disk)},format=qcow2,if=none,id=disk,discard=unmap",
        "-device", f"virtio-blk-{m.bus},drive=disk,serial=chaser-rw",
    ]  # fmt: skip
    if config.workspace_disk is not None:
        argv += [
            "-drive", f"file={_opt(config.workspace_disk)},format=raw,if=none,id=workspace,discard=unmap",
            "-device", f"virtio-blk-{m.bus},drive=workspace,serial=chaser-ws",
        ]  # fmt: skip
    argv += [
        "-device", f"virtio-serial-{m.bus},id=serial",
        "-chardev", f"socket,id=guest,fd={guest_fd},server=on,wait=off",
        "-device", "virtserialport,bus=serial.0,chardev=guest,name=chaser.0",
        "-chardev", f"socket,id=qmp,fd={qmp_fd},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
    ]  # fmt: skip
    argv += ["-incoming", "defer"] if incoming else ["-S"]
    return argv
