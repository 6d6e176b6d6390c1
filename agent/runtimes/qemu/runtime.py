"""Sandboxes as QEMU microVMs, driven over QMP and a guest agent channel.

Under ``root``: ``sandboxes/<id>/`` holds a sandbox's ``vm.json`` (what the
VM is made of, see ``qemu_command``), ``disk.qcow2`` (its writable disk, a
copy-on-write overlay: the guest mounts it as the upper layer of an overlayfs
over the image's read-only erofs disk; the guest agent runs from the
bundle's, ``vmimages.bundle``), ``console.log``, QEMU's pid file and
stderr and, while paused, ``memory.snap``; ``bases/`` the frozen disks forks
share (see ``qemu_disks``); ``templates/<key>/`` the snapshots of freshly
booted guests that warm starts fork from. QMP and guest sockets live in the
short run dir.

Each QEMU runs in a jail of its own (``qemu_jail``): a uid handed out for
the launch, no privileges, seccomp, a mount namespace holding only its
files. The agent makes its sockets and hands them over, and gives it its
disk, workspace disk and console (owned by that uid) for the run. It is
detached from the agent, so VMs keep running across agent restarts; a live
VM is recognised by its ``-name`` in ``/proc/<pid>/cmdline``.

A sandbox with a network slot runs its QEMU inside the slot's namespace,
its NIC on a tap bridged to the slot's veth (``qemu_network``); QEMU starts
stopped, enters the cgroup of the sandbox's limits (``qemu_cgroup``), and
only then runs. A workspace disk is a further virtio-blk device the guest
mounts at /workspace; ``frozen`` freezes it from inside, and ``destroy``
has the guest sync and freeze it before QEMU is killed.

Booting is done when the guest agent answers its hello (exec-ready). A VM
that dies first (a kernel panic ends QEMU: ``panic=-1`` and ``-no-reboot``)
is reported with the console's last words; one that hangs is cut off by the
caller's deadline. Either way ``start`` kills QEMU before it raises, and
``destroy`` removes every file and socket.

Pause says bye to the guest agent (so nothing is left half-sent), saves the
VM's state to ``memory.snap`` and ends QEMU; the disk stays as it is. Resume
starts an identical QEMU with ``-incoming`` and loads the file. A fork gets
an overlay over the paused sandbox's frozen disk and a link to its memory
file, and resumes from there as a new sandbox: the hello gives it its own
identity (session id, clock, a reseeded RNG, its slot's address).

The guest channels' reader tasks, and template builds, run in the runtime's
own nursery (``run``); a channel lost with its agent (a restart) is opened
again on first use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import trio

import vmimages.bundle
from agent.runtimes.atomic_write import write_atomically
from agent.runtimes.base import (
    WORKSPACE_MOUNT,
    PortClosed,
    RuntimeFailure,
    SandboxGone,
    SandboxSpec,
)
from agent.runtimes.channel.guest_channel import GuestChannel
from agent.runtimes.channel.sandbox_io import ChannelEndpoints, GuestConnection
from agent.runtimes.qemu import cgroup as qemu_cgroup
from agent.runtimes.qemu import jail as qemu_jail
from agent.runtimes.qemu import network as qemu_network
from agent.runtimes.qemu import snapshot as qemu_snapshot
from agent.runtimes.qemu.command import VmConfig, VmPaths, qemu_argv
from agent.runtimes.qemu.disks import Bases, overlay
from agent.runtimes.qemu.jail import Jail, VmUids
from agent.runtimes.qemu.machine import Machine
from agent.runtimes.qemu.qmp import QmpClient, QmpError
from chaser.wire.isolation import Limits
from vmimages.vm import VmImageFiles

log = logging.getLogger(__name__)

# How long QEMU may take to set up and answer on its monitor, and to die once killed.
_LAUNCH_TIMEOUT = 30.0
_KILL_TIMEOUT = 10.0
# After the guest connection drops during boot, how long to wait for QEMU's
# exit, which explains it better than the dropped connection does.
_EXIT_GRACE = 3.0
# How long the guest agent may take to say bye before a pause goes on without.
_BYE_TIMEOUT = 5.0
# How long QEMU may take to exit after "quit" once its state is saved.
_QUIT_TIMEOUT = 10.0
# A template is a whole boot plus a pause.
_TEMPLATE_TIMEOUT = 300.0
# How much of the console's end explains a failed boot (a panic's trace is long).
_CONSOLE_TAIL = 64 << 10
# QEMU's own memory beside the guest's RAM (its cgroup allows both): under
# TCG mostly the translated-code cache (qemu_command.TCG_CACHE_MB).
_OVERHEAD_MB = {"tcg": 320, "kvm": 128}
_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s*")


class QemuRuntime(ChannelEndpoints):
    name = "qemu"

    def __init__(
        self,
        root: Path,
        run_dir: Path,
        machine: Machine,
        *,
        bundle: Path,
        memory_mb: int,
        vcpus: int,
        qemu: str = "qemu-system-x86_64",
        connect_timeout: float = 30.0,
        warm_start: bool = False,
        uids: VmUids | None = None,
        allow_tcg: bool = True,
    ) -> None:
        super().__init__()
        self.sandboxes_dir = root / "sandboxes"
        self.templates_dir = root / "templates"
        self.bases = Bases(root / "bases")
        self.run_dir = run_dir
        self.machine = machine
        # The in-sandbox agent's bundle (``vmimages.bundle``): every VM gets it as a disk.
        self.bundle = bundle
        self.memory_mb = memory_mb
        self.vcpus = vcpus
        self.qemu = qemu
        self.connect_timeout = connect_timeout
        self.warm_start = warm_start
        self.uids = uids if uids is not None else VmUids()
        self.allow_tcg = allow_tcg
        for path in (self.sandboxes_dir, self.templates_dir):
            path.mkdir(parents=True, exist_ok=True)
        self._building: set[str] = set()

    def describe(self) -> dict[str, dict[str, object]]:
        return {
            self.name: {
                "accel": self.machine.accel,
                "machine": self.machine.machine,
                "warm_start": self.warm_start,
                "refused": self.refusal,
            }
        }

    @property
    def refusal(self) -> str | None:
        """Why this host takes no new VMs (the ones it has keep running), or None."""
        if self.machine.accel == "tcg" and not self.allow_tcg:
            return (
                "KVM cannot run guests on this host, and its operator does not allow VMs under TCG "
                "emulation (vm_allow_tcg = false)"
            )
        return None

    def workspace_as_device(self, image: str) -> bool:
        return True

    def _stopped(self) -> None:
        self._tidy_run_dir()

    def paths(self, sandbox_id: str) -> VmPaths:
        return VmPaths(self.sandboxes_dir, self.run_dir, sandbox_id)

    # -- create and boot ---------------------------------------------------

    async def create(self, spec: SandboxSpec) -> None:
        """Prepare the sandbox: from the image's template when there is one, else for a cold boot.

        Its vm.json is written first, so that ``destroy`` undoes whatever
        follows (the network wiring included) if a step fails.
        """
        paths = self.paths(spec.id)
        image = VmImageFiles(spec.rootfs)
        agent_disk = await self._agent_disk()
        config = self._attach(
            spec,
            VmConfig(
                image=spec.image,
                image_disk=str(image.disk),
                agent_disk=str(agent_disk),
                kernel=str(image.kernel),
                initrd=str(image.initrd),
                memory_mb=self.memory_mb,
                vcpus=self.vcpus,
                machine=self.machine,
                workspace_disk=str(spec.workspace_disk) if spec.workspace_disk is not None else None,
            ),
        )
        template = self.templates_dir / self._template_key(config)
        warm = self.warm_start and (template / "memory.snap").exists()
        if warm:
            below = VmConfig.from_json((template / "vm.json").read_text()).backing
            config = dataclasses.replace(config, backing=(str(template / "disk.qcow2"), *below))
        else:
            config = dataclasses.replace(config, backing=(str(image.scratch),))
        paths.home.mkdir(mode=0o700)
        paths.config.write_text(config.to_json())
        await self._wire(config)
        await overlay(config.backing, paths.disk)
        if warm:
            os.link(template / "memory.snap", paths.memory)
        elif self.warm_start and config.workspace_disk is None:  # templates have no workspace disk
            self._ensure_template(config)

    async def _agent_disk(self) -> Path:
        """The bundle's disk, made by the first create (whole or not at all, even if cancelled)."""
        try:
            return await trio.to_thread.run_sync(vmimages.bundle.disk, self.bundle)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise RuntimeFailure(f"cannot make the sandbox agent's disk of {self.bundle}: {exc}") from None

    def _attach(self, spec: SandboxSpec, config: VmConfig) -> VmConfig:
        """``config`` sized by the sandbox's limits (RAM, vCPUs, QEMU's cgroup), in its network slot."""
        changes: dict[str, object] = {}
        if spec.limits is not None:
            assert spec.limits.memory_mb is not None and spec.limits.cpus is not None
            changes["memory_mb"] = spec.limits.memory_mb
            changes["vcpus"] = max(1, min(math.ceil(spec.limits.cpus), os.cpu_count() or 1))
            overhead = _OVERHEAD_MB[self.machine.accel]
            changes["cgroup"] = qemu_cgroup.vm_limits(spec.limits, overhead).model_dump()
        if spec.netns is not None:
            changes["netns"] = str(spec.netns)
        if spec.guest_network is not None:
            changes["address"] = str(spec.guest_network.address)
            changes["gateway"] = str(spec.guest_network.gateway)
        return dataclasses.replace(config, **changes)  # type: ignore[arg-type]

    async def _wire(self, config: VmConfig) -> None:
        if config.netns is not None:
            await qemu_network.wire(Path(config.netns))

    async def start(self, sandbox_id: str) -> None:
        """Boot, or, for a sandbox made from a snapshot (a template, a fork), restore."""
        paths = self.paths(sandbox_id)
        if not paths.config.exists():
            raise SandboxGone(f"sandbox {sandbox_id} does not exist")
        if paths.memory.exists():
            await self._restore(paths)
        else:
            await self._boot(paths, incoming=False)

    async def _boot(self, paths: VmPaths, *, incoming: bool) -> None:
        """Launch QEMU (stopped), put it in its cgroup, run it (loading ``memory.snap``
        if ``incoming``) and connect to the guest agent; on any failure, kill QEMU."""
        config = VmConfig.from_json(paths.config.read_text())
        pid, qmp = await self._launch(config, paths, incoming=incoming)
        try:
            try:
                if config.cgroup is not None:
                    limits = Limits.model_validate(config.cgroup)
                    await trio.to_thread.run_sync(qemu_cgroup.enter, paths.id, pid, limits)
                if incoming:
                    await qemu_snapshot.load(qmp, paths.memory)
                else:
                    await qmp.execute("cont")
            finally:
                qmp.close()
            await self._connect(paths, pid, config, reconnecting=incoming)
        except BaseException:
            with trio.CancelScope(shield=True):
                self._drop_channel(paths.id, "the boot failed")
                await _kill(pid, paths.name)
                await self._remove_cgroup(paths.id)
            raise

    async def _restore(self, paths: VmPaths) -> None:
        """Run the sandbox from its ``memory.snap``, which then goes: its state moves on."""
        await self._boot(paths, incoming=True)
        paths.memory.unlink()
        # The disk is written from now on: a later fork needs a new base.
        paths.frozen.unlink(missing_ok=True)

    async def _launch(self, config: VmConfig, paths: VmPaths, *, incoming: bool) -> tuple[int, QmpClient]:
        """Start QEMU, stopped, in its jail; returns its pid and monitor once it answers.

        Any failure, or a cancel, on the way kills it: through a pidfd taken
        as soon as bwrap names the pid, so even a QEMU not yet exec'd goes.
        """
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths.pidfile.unlink(missing_ok=True)
        listeners = [_listen(paths.qmp), _listen(paths.guest)]
        pidfd: int | None = None
        try:
            async with self.uids.claim() as uid:
                jail = await self._jail(config, paths, uid)
                fds = [listener.fileno() for listener in listeners]
                command = qemu_argv(self.qemu, config, paths, qmp_fd=fds[0], guest_fd=fds[1], incoming=incoming)
                # Shielded: cut off half-way, a QEMU could start unknown to us.
                with trio.CancelScope(shield=True):
                    pid = await _spawn(jail, command, paths.log, fds)
                    pidfd = os.pidfd_open(pid)
                    paths.pidfile.write_text(str(pid))
                    for listener in listeners:
                        listener.close()  # QEMU's now: it alone accepts on them
                if not await qemu_jail.settled(pid, uid):
                    raise RuntimeFailure(f"QEMU did not start: {_last_words(paths.log)}")
            with trio.move_on_after(_LAUNCH_TIMEOUT):
                try:
                    return pid, await QmpClient.connect(paths.qmp)
                except QmpError:
                    raise RuntimeFailure(f"QEMU did not start: {_last_words(paths.log)}") from None
            raise RuntimeFailure(f"QEMU did not answer on its monitor within {_LAUNCH_TIMEOUT:g}s")
        except BaseException:
            if pidfd is not None:
                with trio.CancelScope(shield=True):
                    await _end(pidfd)
            raise
        finally:
            for listener in listeners:
                listener.close()
            if pidfd is not None:
                os.close(pidfd)

    async def _jail(self, config: VmConfig, paths: VmPaths, uid: int) -> Jail:
        """The VM's files handed over to ``uid`` (its tap too), and the jail that holds them."""
        writes = [paths.disk, paths.console]
        if config.workspace_disk is not None:
            writes.append(Path(config.workspace_disk))
        paths.console.touch()
        qemu_jail.hand_over(writes, uid)
        devices, groups = [], []
        if config.netns is not None:
            await qemu_network.plug(Path(config.netns), uid)
            devices.append(Path("/dev/net/tun"))
        if self.machine.accel == "kvm":
            kvm = Path("/dev/kvm")
            devices.append(kvm)
            if kvm.stat().st_mode & 0o006 != 0o006:  # not for all: for its group (Debian's kvm)
                groups.append(kvm.stat().st_gid)
        reads = (config.kernel, config.initrd, config.image_disk, config.agent_disk, *config.backing)
        return Jail(
            uid=uid,
            reads=tuple(map(Path, reads)),
            writes=tuple(writes),
            devices=tuple(devices),
            groups=tuple(groups),
            netns=config.netns,
        )

    async def _connect(self, paths: VmPaths, pid: int, config: VmConfig, *, reconnecting: bool) -> GuestChannel:
        """Open the guest channel and wait for the hello, or for QEMU to die first."""
        if self._nursery is None:
            raise RuntimeFailure("the qemu runtime is not running")
        nursery = self._nursery
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise RuntimeFailure(_explain_exit(paths)) from None
        try:
            try:
                stream = await trio.open_unix_socket(str(paths.guest))
            except OSError as exc:
                raise RuntimeFailure(f"cannot reach the guest channel: {exc}") from None
            channel = GuestChannel(stream, paths.id)
            died = trio.Event()
            lost: SandboxGone | None = None
            async with trio.open_nursery() as race:

                async def watch_qemu() -> None:
                    await trio.lowlevel.wait_readable(pidfd)
                    died.set()
                    race.cancel_scope.cancel()

                race.start_soon(watch_qemu)
                try:
                    await nursery.start(
                        partial(channel.serve, paths.id, reconnecting=reconnecting, network=config.guest_network)
                    )
                except SandboxGone as exc:
                    lost = exc
                    with trio.move_on_after(_EXIT_GRACE):
                        await died.wait()
                race.cancel_scope.cancel()
            if died.is_set():
                channel.close("QEMU exited")
                raise RuntimeFailure(_explain_exit(paths))
            if lost is not None:
                raise RuntimeFailure(f"the guest agent went away while connecting: {lost}")
        finally:
            os.close(pidfd)
        self._channels[paths.id] = channel
        return channel

    async def _reconnect(self, sandbox_id: str) -> GuestChannel:
        paths = self.paths(sandbox_id)
        pid = await trio.to_thread.run_sync(_qemu_pid, paths)
        if pid is None:
            raise SandboxGone(f"sandbox {sandbox_id} is not running")
        config = VmConfig.from_json(paths.config.read_text())
        try:
            with trio.fail_after(self.connect_timeout):
                return await self._connect(paths, pid, config, reconnecting=True)
        except trio.TooSlowError:
            raise RuntimeFailure(
                f"the guest agent of {sandbox_id} did not answer within {self.connect_timeout:g}s"
            ) from None

    # -- snapshots -------------------------------------------------------------

    async def pause(self, sandbox_id: str) -> None:
        paths = self.paths(sandbox_id)
        pid = await trio.to_thread.run_sync(_qemu_pid, paths)
        if pid is None:
            raise SandboxGone(f"sandbox {sandbox_id} is not running")
        channel = self._channels.get(sandbox_id)
        if channel is not None and not channel.closed:
            with trio.move_on_after(_BYE_TIMEOUT):
                await channel.say_bye()
        self._drop_channel(sandbox_id, "the sandbox was paused")
        qmp = await QmpClient.connect(paths.qmp)
        try:
            size = await qemu_snapshot.save(qmp, paths.memory)
            with contextlib.suppress(QmpError):  # the monitor may close before it answers
                await qmp.execute("quit")
        finally:
            qmp.close()
        await _wait_exit(pid, paths.name, _QUIT_TIMEOUT)
        await self._remove_cgroup(sandbox_id)
        for sock in paths.sockets:
            sock.unlink(missing_ok=True)
        self._tidy_run_dir()
        log.info("paused sandbox into %d MiB", size >> 20, extra={"session_id": sandbox_id})

    async def resume(self, sandbox_id: str) -> None:
        paths = self.paths(sandbox_id)
        if not paths.memory.exists():
            raise RuntimeFailure(f"sandbox {sandbox_id} is not paused")
        await self._restore(paths)

    async def fork(self, source_id: str, spec: SandboxSpec) -> None:
        """The source's machine and memory, with this sandbox's own disk overlay and network slot."""
        source, paths = self.paths(source_id), self.paths(spec.id)
        if not source.memory.exists():
            raise RuntimeFailure(f"sandbox {source_id} is not paused")
        hardware = VmConfig.from_json(source.config.read_text())
        blank = dataclasses.replace(hardware, netns=None, address=None, gateway=None, cgroup=None)
        config = self._attach(spec, blank)
        if config.hardware() != hardware.hardware():
            raise RuntimeFailure("a fork must have its source's memory and vCPUs")
        async with self.bases.lock:
            # Freeze the paused disk once; forks made while it stays paused share the base.
            chain = hardware.backing
            if not source.frozen.exists():
                chain = await self.bases.freeze(source.disk, chain)
                write_atomically(source.config, dataclasses.replace(hardware, backing=chain).to_json())
                source.frozen.touch()
            config = dataclasses.replace(config, backing=chain)
            paths.home.mkdir(mode=0o700)
            paths.config.write_text(config.to_json())
            await overlay(chain, paths.disk)
        await self._wire(config)
        os.link(source.memory, paths.memory)
        await self._restore(paths)

    # -- freezing the workspace -------------------------------------------------

    @contextlib.asynccontextmanager
    async def frozen(self, sandbox_id: str, path: str) -> AsyncIterator[None]:
        """Freeze the filesystem at ``path`` inside the guest (its writes reach QEMU's
        file first); thawed whatever ends the block, unless the VM went away."""
        channel = await self.channel(sandbox_id)
        await channel.request({"type": "freeze", "path": path, "frozen": True})
        try:
            yield
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_BYE_TIMEOUT), contextlib.suppress(SandboxGone):
                await channel.request({"type": "freeze", "path": path, "frozen": False})

    # -- warm start templates -----------------------------------------------

    def _template_key(self, config: VmConfig) -> str:
        """Templates fit exactly one machine: same image, agent bundle, kernel, size, accelerator, QEMU."""
        qemu = shutil.which(self.qemu) or self.qemu
        stat = os.stat(qemu)
        material = f"{config.hardware()}|{qemu}|{stat.st_size}|{stat.st_mtime_ns}"
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def _ensure_template(self, config: VmConfig) -> None:
        key = self._template_key(config)
        if key not in self._building and self._nursery is not None:
            self._building.add(key)
            # The machine alone: a template belongs to no session's network or cgroup.
            machine = dataclasses.replace(config, netns=None, address=None, gateway=None, cgroup=None)
            self._nursery.start_soon(self._build_template, machine, key)

    async def _build_template(self, config: VmConfig, key: str) -> None:
        """Boot a guest, pause it, keep its memory and frozen disk as ``templates/<key>``."""
        paths = self.paths(f"template-{uuid.uuid4()}")
        staging = self.templates_dir / f".{key}.partial"
        try:
            with trio.fail_after(_TEMPLATE_TIMEOUT):
                paths.home.mkdir(mode=0o700)
                paths.config.write_text(config.to_json())
                await overlay(config.backing, paths.disk)
                await self._boot(paths, incoming=False)
                await self.pause(paths.id)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            os.rename(paths.disk, staging / "disk.qcow2")
            qemu_jail.share(staging / "disk.qcow2")
            os.rename(paths.memory, staging / "memory.snap")
            shutil.copyfile(paths.config, staging / "vm.json")
            os.rename(staging, self.templates_dir / key)
            log.info("warm start template %s of %s is ready", key, config.image)
        except (RuntimeFailure, OSError, trio.TooSlowError) as exc:
            log.warning("could not build a warm start template of %s: %s", config.image, exc)
        finally:
            with trio.CancelScope(shield=True):
                await self.destroy(paths.id)
                shutil.rmtree(staging, ignore_errors=True)
                self._building.discard(key)

    # -- processes -----------------------------------------------------------

    async def open_port(self, sandbox_id: str, port: int) -> trio.abc.Stream:
        channel = await self.channel(sandbox_id)
        connection = await channel.connect(port)
        if connection is None:
            raise PortClosed(f"nothing listens on port {port} in the sandbox")
        return GuestConnection(connection)

    # -- teardown and inventory ---------------------------------------------

    async def destroy(self, sandbox_id: str) -> None:
        paths = self.paths(sandbox_id)
        config: VmConfig | None = None
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            config = VmConfig.from_json(paths.config.read_text())
        if config is not None and config.workspace_disk is not None:
            await self._sync(sandbox_id)
        pid = await trio.to_thread.run_sync(partial(_qemu_pid, paths, search=True))
        if pid is not None:
            await _kill(pid, paths.name)
        # After the kill: the guest would thaw its workspace on seeing the host go.
        self._drop_channel(sandbox_id, "the sandbox was destroyed")
        await self._remove_cgroup(sandbox_id)
        for sock in paths.sockets:
            sock.unlink(missing_ok=True)
        self._tidy_run_dir()
        network = config.guest_network if config is not None else None
        if config is not None and config.netns is not None and network is not None:
            await qemu_network.release(Path(config.netns), network)
        await trio.to_thread.run_sync(partial(shutil.rmtree, paths.home, ignore_errors=True))
        self._locks.pop(sandbox_id, None)
        async with self.bases.lock:
            chains = await trio.to_thread.run_sync(self._chains)
            await trio.to_thread.run_sync(self.bases.collect, chains)

    def _chains(self) -> list[tuple[str, ...]]:
        """What lies under every sandbox's and template's disk, as recorded."""
        chains = []
        for config in (*self.sandboxes_dir.glob("*/vm.json"), *self.templates_dir.glob("*/vm.json")):
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                chains.append(VmConfig.from_json(config.read_text()).backing)
        return chains

    async def _sync(self, sandbox_id: str) -> None:
        """Have a running guest write what it cached to its disks, and leave its
        workspace frozen (so clean: its journal checkpointed) for the VM's end.
        Best effort, briefly: a workspace's files would otherwise die with the VM."""
        if await trio.to_thread.run_sync(_qemu_pid, self.paths(sandbox_id)) is None:
            return  # paused, or dead: nothing cached in a running guest
        with trio.move_on_after(_BYE_TIMEOUT), contextlib.suppress(RuntimeFailure):
            channel = await self.channel(sandbox_id)
            await channel.request({"type": "sync"})
            await channel.request({"type": "freeze", "path": WORKSPACE_MOUNT, "frozen": True})

    async def _remove_cgroup(self, sandbox_id: str) -> None:
        try:
            await trio.to_thread.run_sync(qemu_cgroup.remove, sandbox_id)
        except OSError as exc:
            raise RuntimeFailure(f"cannot remove the VM's cgroup: {exc}") from None

    async def running(self) -> set[str]:
        ids = [p.name for p in self.sandboxes_dir.iterdir() if p.is_dir()]
        alive = await trio.to_thread.run_sync(lambda: [i for i in ids if _qemu_pid(self.paths(i)) is not None])
        return set(alive)

    async def leftovers(self) -> set[str]:
        homes = {p.name for p in self.sandboxes_dir.iterdir() if p.is_dir()}
        sockets = {p.name.rsplit(".", 1)[0] for p in self.run_dir.iterdir()} if self.run_dir.exists() else set()
        return homes | sockets

    def _tidy_run_dir(self) -> None:
        """Remove the socket dir once no VM has sockets in it (made again on launch)."""
        with contextlib.suppress(OSError):
            self.run_dir.rmdir()


def _is_ours(pid: int, name: str) -> bool:
    """True if ``pid`` is a live (not zombie) QEMU started as ``qemu -name name``
    (not the bwrap waiting for it, whose command line holds QEMU's)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argv[1:3] == [b"-name", name.encode()]


def _listen(path: Path) -> socket.socket:
    """A listening unix socket at ``path`` (replacing a stale one), for QEMU to take over."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


async def _spawn(jail: Jail, command: list[str], log: Path, fds: list[int]) -> int:
    """Start ``command`` in ``jail``, detached, passing it ``fds``, its stderr to ``log``; returns its pid."""
    info_read, info_write = os.pipe()
    try:
        with open(log, "wb") as stderr:
            done = await trio.run_process(
                qemu_jail.argv(jail, command, info_write),
                pass_fds=(info_write, *fds),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=qemu_jail.ENV,
                check=False,
            )
        os.close(info_write)
        info_write = -1
        if done.returncode != 0:
            raise RuntimeFailure(f"QEMU's jail did not start: {_last_words(log)}")
        text = b""
        async with trio.lowlevel.FdStream(info_read) as stream:
            info_read = -1
            with trio.move_on_after(_LAUNCH_TIMEOUT):
                while chunk := await stream.receive_some():
                    text += chunk
                    with contextlib.suppress(ValueError):
                        return int(json.loads(text)["child-pid"])
        raise RuntimeFailure(f"QEMU's jail did not start: {_last_words(log)}")
    finally:
        for fd in (info_read, info_write):
            if fd >= 0:
                os.close(fd)


def _last_words(log: Path) -> str:
    """The last line QEMU (or its jail) wrote to stderr."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1] if lines else "no error output"


def _qemu_pid(paths: VmPaths, *, search: bool = False) -> int | None:
    """The pid of the sandbox's live QEMU, by pid file or (``search``) by name."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(paths.pidfile.read_text())
        if _is_ours(pid, paths.name):
            return pid
    if not search:
        return None
    # A QEMU whose pid file was never written (an agent killed as it
    # launched one) is still found by its -name.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_ours(int(entry.name), paths.name):
            return int(entry.name)
    return None


async def _kill(pid: int, name: str) -> None:
    """SIGKILL the QEMU and wait until it has exited."""
    await _wait_exit(pid, name, 0)


async def _wait_exit(pid: int, name: str, grace: float) -> None:
    """Wait up to ``grace`` seconds for QEMU to exit, then SIGKILL it and wait.

    Through a pidfd, so a recycled pid is never signalled.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if not _is_ours(pid, name):
            return
        with trio.move_on_after(grace):
            await trio.lowlevel.wait_readable(pidfd)
            return
        await _end(pidfd)
    finally:
        os.close(pidfd)


async def _end(pidfd: int) -> None:
    """SIGKILL the process behind ``pidfd`` and wait until it has exited."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    with trio.move_on_after(_KILL_TIMEOUT):
        await trio.lowlevel.wait_readable(pidfd)
        return
    raise RuntimeFailure("QEMU did not exit after SIGKILL")


def _explain_exit(paths: VmPaths) -> str:
    """Why QEMU ended during boot, from the guest console's last lines."""
    try:
        with open(paths.console, "rb") as console:
            console.seek(max(0, console.seek(0, os.SEEK_END) - _CONSOLE_TAIL))
            lines = console.read().decode(errors="replace").splitlines()
    except OSError:
        lines = []
    lines = [_TIMESTAMP.sub("", line).strip() for line in lines if line.strip()]
    said = [line for line in lines if line.startswith("chaser-init:")]
    panics = [line for line in lines if "Kernel panic" in line]
    if panics:
        return f"the guest kernel panicked: {panics[-1]}" + (f" ({said[-1]})" if said else "")
    return "QEMU exited while the guest booted: " + (" | ".join(lines[-3:]) or "no console output")
