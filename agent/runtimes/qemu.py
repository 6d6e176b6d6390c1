"""Sandboxes as QEMU microVMs, driven over QMP and a guest agent channel.

Under ``root``: ``sandboxes/<id>/`` holds a sandbox's ``vm.json`` (what the
VM is made of, see ``qemu_command``), ``disk.qcow2`` (its writable disk, a
copy-on-write overlay: the guest mounts it as the upper layer of an overlayfs
over the image's read-only erofs disk), ``console.log``, QEMU's pid file and,
while paused, ``memory.snap``; ``bases/`` the frozen disks forks share (see
``qemu_disks``); ``templates/<key>/`` the snapshots of freshly booted guests
that warm starts fork from. QMP and guest sockets live in the short run dir.
QEMU daemonizes, so VMs keep running across agent restarts; a live VM is
recognised by its ``-name`` in ``/proc/<pid>/cmdline``.

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
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import trio

from agent.guest_channel import GuestChannel
from agent.qmp import QmpClient, QmpError
from agent.runtimes import qemu_cgroup, qemu_network, qemu_snapshot
from agent.runtimes.base import (
    WORKSPACE_MOUNT,
    PortClosed,
    RuntimeFailure,
    SandboxGone,
    SandboxSpec,
)
from agent.runtimes.machine import Machine
from agent.runtimes.qemu_command import VmConfig, VmPaths, qemu_argv
from agent.runtimes.qemu_disks import Bases, backing_file, overlay
from agent.runtimes.sandbox_io import ChannelEndpoints, GuestConnection
from chaser.isolation import Limits
from vmimages.vm import VmImageFiles

log = logging.getLogger(__name__)

# How long QEMU may take to set up and daemonize, and to die once killed.
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
        memory_mb: int,
        vcpus: int,
        qemu: str = "qemu-system-x86_64",
        connect_timeout: float = 30.0,
        warm_start: bool = False,
    ) -> None:
        self.sandboxes_dir = root / "sandboxes"
        self.templates_dir = root / "templates"
        self.bases = Bases(root / "bases")
        self.run_dir = run_dir
        self.machine = machine
        self.memory_mb = memory_mb
        self.vcpus = vcpus
        self.qemu = qemu
        self.connect_timeout = connect_timeout
        self.warm_start = warm_start
        for path in (self.sandboxes_dir, self.templates_dir):
            path.mkdir(parents=True, exist_ok=True)
        self._channels: dict[str, GuestChannel] = {}
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        self._building: set[str] = set()
        self._nursery: trio.Nursery | None = None

    def describe(self) -> dict[str, dict[str, object]]:
        return {
            self.name: {"accel": self.machine.accel, "machine": self.machine.machine, "warm_start": self.warm_start}
        }

    def workspace_as_device(self, image: str) -> bool:
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the guest channels' tasks until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for channel in self._channels.values():
                channel.close("the agent is stopping")
            self._channels.clear()
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
        config = self._attach(
            spec,
            VmConfig(
                image=spec.image,
                image_disk=str(image.disk),
                kernel=str(image.kernel),
                initrd=str(image.initrd),
                memory_mb=self.memory_mb,
                vcpus=self.vcpus,
                machine=self.machine,
                workspace_disk=str(spec.workspace_disk) if spec.workspace_disk is not None else None,
            ),
        )
        paths.home.mkdir(mode=0o700)
        paths.config.write_text(config.to_json())
        await self._wire(config)
        template = self.templates_dir / self._template_key(config)
        if self.warm_start and (template / "memory.snap").exists():
            await overlay(template / "disk.qcow2", paths.disk)
            os.link(template / "memory.snap", paths.memory)
            return
        await overlay(image.scratch, paths.disk)
        if self.warm_start and config.workspace_disk is None:  # templates have no workspace disk
            self._ensure_template(config)

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
        pid = await self._launch(config, paths, incoming=incoming)
        try:
            if config.cgroup is not None:
                limits = Limits.model_validate(config.cgroup)
                await trio.to_thread.run_sync(qemu_cgroup.enter, paths.id, pid, limits)
            qmp = await QmpClient.connect(paths.qmp)
            try:
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

    async def _launch(self, config: VmConfig, paths: VmPaths, *, incoming: bool) -> int:
        """Start QEMU; returns once it has daemonized (its devices and sockets exist).

        Shielded: cut off half-way, QEMU's daemon child could outlive the
        parent trio kills, unknown to us. It takes tens of milliseconds.
        """
        paths.pidfile.unlink(missing_ok=True)
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = qemu_argv(self.qemu, config, paths, incoming=incoming)
        with trio.CancelScope(shield=True), trio.move_on_after(_LAUNCH_TIMEOUT):
            done = await trio.run_process(
                argv, capture_stderr=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=False
            )
            pid = _qemu_pid(paths)
            if done.returncode == 0 and pid is not None:
                return pid
            error = done.stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeFailure(f"QEMU did not start: {error[-1] if error else f'exit status {done.returncode}'}")
        raise RuntimeFailure(f"QEMU did not start within {_LAUNCH_TIMEOUT:g}s")

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

    def _drop_channel(self, sandbox_id: str, reason: str) -> None:
        channel = self._channels.pop(sandbox_id, None)
        if channel is not None:
            channel.close(reason)

    async def channel(self, sandbox_id: str) -> GuestChannel:
        """The live channel to the sandbox's guest agent, reconnecting if needed."""
        channel = self._channels.get(sandbox_id)
        if channel is not None and not channel.closed:
            return channel
        async with self._locks[sandbox_id]:
            channel = self._channels.get(sandbox_id)
            if channel is not None and not channel.closed:
                return channel
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
            base = backing_file(source.disk) if source.frozen.exists() else None
            if base is None:
                base = await self.bases.freeze(source.disk)
                source.frozen.touch()
            paths.home.mkdir(mode=0o700)
            paths.config.write_text(config.to_json())
            await overlay(base, paths.disk)
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
        """Templates fit exactly one machine: same image, kernel, size, accelerator, QEMU."""
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
                await overlay(VmImageFiles(Path(config.image_disk)).scratch, paths.disk)
                await self._boot(paths, incoming=False)
                await self.pause(paths.id)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            os.rename(paths.disk, staging / "disk.qcow2")
            os.chmod(staging / "disk.qcow2", 0o400)
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
            disks = [*self.sandboxes_dir.glob("*/disk.qcow2"), *self.templates_dir.glob("*/disk.qcow2")]
            await trio.to_thread.run_sync(self.bases.collect, disks)

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
    """True if ``pid`` is a live (not zombie) QEMU started with ``-name name``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return name.encode() in argv


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
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        with trio.move_on_after(_KILL_TIMEOUT):
            await trio.lowlevel.wait_readable(pidfd)
            return
        raise RuntimeFailure(f"QEMU {pid} did not exit after SIGKILL")
    finally:
        os.close(pidfd)


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
