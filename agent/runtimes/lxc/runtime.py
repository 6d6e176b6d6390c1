"""Sandboxes as LXC system containers: unprivileged, filtered, served by the in-sandbox agent.

Each sandbox lives in ``<lxc_path>/<name>/``: the LXC ``config``, the overlay's
writable layer ``delta0`` and its work dir. The root filesystem is
``overlay:<image rootfs, shifted>:<delta0>`` (or a registry image's
layers, each a lower: ``overlay:<top>:...:<base>:<delta0>``), mounted by LXC inside the
container's own mount namespace, so creating a sandbox copies nothing and a
crashed container leaves no mount on the host: only the directory, which
``destroy`` removes. The name is the sandbox's id, except for a container
started ahead of any request (``agent.sandboxes.warm_pool``): LXC cannot rename a
running container, so ``adopt`` records the id it was given in
``<name>/sandbox-id``, and this runtime translates between the two.

The boundary (see ``agent.storage.idmap`` and ``seccomp``): every container runs
in a user namespace whose root is an unprivileged host range, so the image's
layer is a copy shifted into that range and every tree the host makes for it
is owned by it; a seccomp deny list at least as strict as Docker's default,
``no_new_privs``, a short device list, ``nosuid,nodev`` writable mounts, and
the capabilities builds need. On a host with AppArmor, LXC's generated
profile confines it too.

The host runs no code of its own inside a container. The container's init is
the in-sandbox agent (``vmimages.guest.agent``), started from the read-only
bundle every container mounts at ``/.chaser`` (``vmimages.bundle``), so any
image works, even one without a libc. It listens on an abstract unix socket
of the container's network namespace; the host connects from a socket made
in that namespace and speaks the same channel as to a VM's guest agent
(``ChannelEndpoints``): processes, terminals, files and tar streams all go
through it. Ports are reached through a TCP socket made in the container's
network namespace (``netns.tcp_socket_in``): no code runs inside for that.

python-lxc calls block, so they run in worker threads behind a limiter; the
channels' reader tasks run in the runtime's own nursery (``run``), and a
channel lost with its agent (a restart) is opened again on first use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar, TypeVarTuple

import lxc
import trio

from agent.network import netns
from agent.runtimes.atomic_write import write_atomically
from agent.runtimes.base import (
    WORKSPACE_MOUNT,
    PortClosed,
    RuntimeFailure,
    SandboxGone,
    SandboxSpec,
)
from agent.runtimes.channel.guest_channel import GuestChannel
from agent.runtimes.channel.sandbox_io import ChannelEndpoints
from agent.runtimes.limits import CGROUP_ROOT, lxc_cgroup_lines, unified_hierarchy
from agent.runtimes.lxc import seccomp as lxc_seccomp
from agent.storage.idmap import IdMap, shifted_image
from agent.storage.scratch import ScratchVolume, StorageError
from vmimages.bundle import BUNDLE_MOUNT, guest_argv

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# The abstract socket the in-sandbox agent listens on, in the container's netns.
CHANNEL_NAME = "chaser-sandbox"
_START_TIMEOUT = 10
_STOP_TIMEOUT = 10.0
_STOP_POLL = 0.005
# The whole environment of the container's monitor.
_LXC_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
# In a container's directory: the sandbox id it was adopted under, if any.
_ADOPTED_AS = "sandbox-id"
# How often to try the in-sandbox agent's socket while it starts.
_CONNECT_POLL = 0.002

_CONFIG_TEMPLATE = """\
lxc.include = /usr/share/lxc/config/common.conf
lxc.include = /usr/share/lxc/config/userns.conf
# common.conf pulls in lxcfs's hooks; its post-stop hook sleeps 0.5 s on
# every stop, and we don't use lxcfs. An empty value clears a hook list.
lxc.hook.mount =
lxc.hook.post-stop =
lxc.uts.name = {hostname}
lxc.rootfs.path = overlay:{lower}:{upper}
lxc.rootfs.options = nosuid,nodev
lxc.init.cmd = {init}
lxc.environment = PYTHONPATH={bundle_mount}/site
lxc.mount.entry = {bundle} {bundle_rel} none bind,ro,nosuid,nodev,create=dir 0 0
lxc.mount.entry = tmpfs dev/shm tmpfs rw,nosuid,nodev,size=256m,create=dir 0 0
lxc.mount.entry = tmpfs tmp tmpfs rw,nosuid,nodev,size=1g,create=dir 0 0
lxc.apparmor.profile = {apparmor}
lxc.no_new_privs = 1
lxc.seccomp.profile = {seccomp}
lxc.tty.max = 0
lxc.autodev = 1
lxc.log.level = ERROR
lxc.log.file = {log}
"""

# A network of its own with only a loopback (brought up after start).
_LOOPBACK_ONLY = "lxc.net.0.type = empty\n"

# Capabilities of the container's root (in its own user namespace): only
# what builds and package managers need, Docker's default set less NET_RAW.
_CAPABILITIES = (
    "lxc.cap.drop =\n"
    "lxc.cap.keep = chown dac_override fowner fsetid kill setgid setuid setpcap"
    " net_bind_service sys_chroot mknod audit_write setfcap\n"
)

# Devices a program may open: the null and random ones, terminals. No fuse,
# no tun, no block device (common.conf's list has more).
_DEVICES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm",
            "c 5:2 rwm", "c 136:* rwm")  # fmt: skip


def _devices_config() -> str:
    key = "lxc.cgroup2.devices" if unified_hierarchy() else "lxc.cgroup.devices"
    return f"{key}.deny = a\n" + "".join(f"{key}.allow = {device}\n" for device in _DEVICES)


# In a pooled network namespace (owned by the host's user namespace) the
# container's root may not mount sysfs: it gets a read-only bind of the
# host's instead (what runc does for rootless containers), without submounts.
_SYSFS_BOUND = (
    "lxc.mount.auto =\n"
    "lxc.mount.auto = proc:mixed cgroup:mixed\n"
    "lxc.mount.entry = /sys sys none rbind,ro,nosuid,nodev,noexec,create=dir 0 0\n"
)


def _network_config(spec: SandboxSpec) -> str:
    """Join the pooled namespace prepared for the sandbox, or get a loopback-only one."""
    if spec.netns is None:
        return _LOOPBACK_ONLY
    return f"lxc.namespace.share.net = {spec.netns}\n" + _SYSFS_BOUND


def _limits_config(spec: SandboxSpec) -> str:
    if spec.limits is None:
        return ""
    return "".join(line + "\n" for line in lxc_cgroup_lines(spec.limits, unified=unified_hierarchy()))


def require_traversable(path: Path, idmap: IdMap) -> None:
    """Fail clearly unless the container's root (an unprivileged host id) may pass
    through every directory above ``path``: LXC sets up the root filesystem as it."""
    for directory in path.resolve().parents:
        if not directory.stat().st_mode & 0o001:
            raise RuntimeFailure(
                f"containers cannot start below {path}: {directory} must let others pass "
                f"(chmod o+x), as their root is host uid {idmap.first}"
            )


def apparmor_enabled() -> bool:
    """Whether the host runs AppArmor (this one has no LSM at all)."""
    with contextlib.suppress(OSError):
        return "apparmor" in Path("/sys/kernel/security/lsm").read_text()
    return False


class LxcRuntime(ChannelEndpoints):
    name = "lxc"

    def __init__(
        self,
        lxc_path: Path,
        bundle: Path,
        idmap: IdMap | None = None,
        max_threads: int = 8,
        scratch: ScratchVolume | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.lxc_path = lxc_path
        # The in-sandbox agent's bundle (``vmimages.bundle``), mounted read-only into every container.
        self.bundle = bundle
        self.idmap = idmap or IdMap()
        # Where sandbox directories get a disk quota; None: no disk limit.
        self.scratch = scratch
        self.start_timeout = start_timeout
        self._limiter = trio.CapacityLimiter(max_threads)
        lxc_path.mkdir(parents=True, exist_ok=True)
        lxc_path.chmod(0o711)
        require_traversable(lxc_path, self.idmap)
        self._seccomp = lxc_path.parent / "lxc-seccomp.policy"
        self._seccomp.write_text(lxc_seccomp.policy())
        self._apparmor = "generated" if apparmor_enabled() else "unconfined"
        # An open descriptor of each sandbox's network namespace, taken while
        # the container is known to run: unlike a pid, it cannot come to
        # name some other process's (the host's) namespace later.
        self._netns: dict[str, int] = {}
        # Each image's shifted copy, once found or made.
        self._shifted: dict[Path, Path] = {}
        # Adopted containers: sandbox id -> container name, and back.
        self._names: dict[str, str] = {}
        self._ids: dict[str, str] = {}
        for record in lxc_path.glob(f"*/{_ADOPTED_AS}"):
            sandbox_id, name = record.read_text(), record.parent.name
            self._names[sandbox_id], self._ids[name] = name, sandbox_id

    def describe(self) -> dict[str, dict[str, object]]:
        return {
            self.name: {
                "user_namespace": f"{self.idmap.first}:{self.idmap.count}",
                "seccomp": "deny list (Docker default and more)",
                "lsm": "apparmor (LXC generated profile)" if self._apparmor == "generated" else "none on this host",
            }
        }

    def _name(self, sandbox_id: str) -> str:
        """The container's name: its sandbox id, unless it was adopted under that id."""
        return self._names.get(sandbox_id, sandbox_id)

    def _dir(self, sandbox_id: str) -> Path:
        return self.lxc_path / self._name(sandbox_id)

    def _container(self, sandbox_id: str) -> lxc.Container:
        return lxc.Container(self._name(sandbox_id), str(self.lxc_path))

    async def _run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def prepare_image(self, rootfs: Path) -> Path:
        """The image's tree shifted into the container range (made once per host: slow the first time)."""
        shifted = self._shifted.get(rootfs)
        if shifted is None:
            shifted = self._shifted[rootfs] = await trio.to_thread.run_sync(shifted_image, rootfs, self.idmap)
        return shifted

    async def create(self, spec: SandboxSpec) -> None:
        lower = ":".join(map(str, spec.layers)) if spec.layers else str(await self.prepare_image(spec.rootfs))
        await self._run(self._create_sync, spec, lower)

    def _disk(self, sandbox_id: str) -> Path | None:
        """The quota-limited directory holding the sandbox's writable layer, if any."""
        return self.scratch.mountpoint / self._name(sandbox_id) if self.scratch is not None else None

    def _create_sync(self, spec: SandboxSpec, lower: str) -> None:
        home = self._dir(spec.id)
        home.mkdir()
        home.chmod(0o711)  # the container's root must reach delta0 below (not read the config)
        # The writable layer (delta0, and overlay's work dir beside it) goes
        # on the sandbox's disk when it has a size; config and log stay here.
        layers = home
        if self.scratch is not None and spec.limits is not None and spec.limits.disk_mb is not None:
            disk = self.scratch.mountpoint / spec.id
            try:
                self.scratch.make_directory(disk, spec.limits.disk_mb)
            except StorageError as exc:
                raise RuntimeFailure(f"could not make the sandbox's disk: {exc}") from None
            layers = disk
        for layer in ("delta0", "work"):  # overlay's upper layer and its work dir beside it
            (layers / layer).mkdir()
            self.idmap.own(layers / layer)
        config = _CONFIG_TEMPLATE.format(
            hostname="sandbox",
            lower=lower,
            upper=layers / "delta0",
            init=" ".join(guest_argv(CHANNEL_NAME)),
            bundle=self.bundle,
            bundle_mount=BUNDLE_MOUNT,
            bundle_rel=BUNDLE_MOUNT.lstrip("/"),
            apparmor=self._apparmor,
            seccomp=self._seccomp,
            log=home / "lxc.log",
        )
        if spec.workspace is not None:
            config += (
                f"lxc.mount.entry = {spec.workspace} {WORKSPACE_MOUNT.lstrip('/')} none "
                "bind,nosuid,nodev,create=dir 0 0\n"
            )
        config += self.idmap.lxc_config() + _network_config(spec) + _CAPABILITIES + _devices_config()
        config += _limits_config(spec)
        (home / "config").write_text(config)

    async def start(self, sandbox_id: str) -> None:
        await self._run(self._start_sync, sandbox_id)
        try:
            with trio.fail_after(self.start_timeout):
                await self._connect(sandbox_id)
        except trio.TooSlowError:
            raise RuntimeFailure(
                f"the sandbox's agent did not answer within {self.start_timeout:g}s: {self._log_tail(sandbox_id)}"
            ) from None

    def _start_sync(self, sandbox_id: str) -> None:
        """Start the container with ``lxc-start``, LXC's own program: python-lxc's start
        would fork this process into the container's monitor, a copy of the agent (and
        of everything it holds in memory) living as root beside every container."""
        container = self._container(sandbox_id)
        if not container.defined:
            raise SandboxGone(f"sandbox {sandbox_id} does not exist")
        done = subprocess.run(
            ["lxc-start", "-P", str(self.lxc_path), "-n", container.name, "-d"],
            env=_LXC_ENV,  # not the agent's: it may hold the cluster token
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_START_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeFailure(f"container failed to start: {self._log_tail(sandbox_id)}")
        pid = int(container.init_pid)
        if pid <= 0:
            raise RuntimeFailure("container did not reach RUNNING")
        if _LOOPBACK_ONLY in (self._dir(sandbox_id) / "config").read_text():
            netns.bring_up_loopback(pid)

    def _log_tail(self, sandbox_id: str) -> str:
        """What LXC said went wrong: its first errors (the later ones only say that others failed)."""
        try:
            lines = (self._dir(sandbox_id) / "lxc.log").read_text().strip().splitlines()
        except OSError:
            return "no log"
        errors = [line.split(" - ", 1)[-1] for line in lines if " ERROR " in line]
        return " | ".join(errors[:3] or lines[-3:]) or "no log"

    # -- the sandbox channel ---------------------------------------------------

    async def _connect(self, sandbox_id: str) -> GuestChannel:
        """Connect to the in-sandbox agent (trying until it listens) and wait for its hello."""
        if self._nursery is None:
            raise RuntimeFailure("the lxc runtime is not running")
        netns_fd = await self._run(self._netns_fd_sync, sandbox_id)
        while True:
            sock = trio.socket.from_stdlib_socket(await self._run(netns.unix_socket_in, netns_fd))
            try:
                await sock.connect("\0" + CHANNEL_NAME)
                break
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()
            except BaseException:
                sock.close()
                raise
            if not await self._is_running(sandbox_id):
                raise RuntimeFailure(f"the sandbox stopped while starting: {self._log_tail(sandbox_id)}")
            await trio.sleep(_CONNECT_POLL)
        channel = GuestChannel(trio.SocketStream(sock), sandbox_id)
        try:
            await self._nursery.start(partial(channel.serve, sandbox_id, reconnecting=False, network=None))
        except SandboxGone as exc:
            raise RuntimeFailure(f"the sandbox's agent went away while connecting: {exc}") from None
        self._channels[sandbox_id] = channel
        return channel

    async def _is_running(self, sandbox_id: str) -> bool:
        return await self._run(lambda: bool(self._container(sandbox_id).running))

    async def _reconnect(self, sandbox_id: str) -> GuestChannel:
        if not (self._dir(sandbox_id) / "config").exists() or not await self._is_running(sandbox_id):
            raise SandboxGone(f"sandbox {sandbox_id} is not running")
        with trio.move_on_after(self.start_timeout):
            return await self._connect(sandbox_id)
        raise RuntimeFailure(f"the agent of sandbox {sandbox_id} did not answer within {self.start_timeout:g}s")

    async def adopt(self, started_id: str, sandbox_id: str) -> None:
        """Record the new id beside the container first (a restart finds it there), then answer to it."""
        name = self._name(started_id)
        home = self.lxc_path / name
        if not (home / "config").exists():
            raise SandboxGone(f"sandbox {started_id} does not exist")
        await self._run(write_atomically, home / _ADOPTED_AS, sandbox_id)
        self._names.pop(started_id, None)
        self._ids[name] = sandbox_id
        if name != sandbox_id:
            self._names[sandbox_id] = name
        self._rename_channel(started_id, sandbox_id)
        if started_id in self._netns:
            self._netns[sandbox_id] = self._netns.pop(started_id)

    # -- ports -------------------------------------------------------------

    async def open_port(self, sandbox_id: str, port: int) -> trio.abc.Stream:
        netns_fd = await self._run(self._netns_fd_sync, sandbox_id)
        sock = trio.socket.from_stdlib_socket(await self._run(netns.tcp_socket_in, netns_fd))
        try:
            await sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise PortClosed(f"nothing listens on port {port} in the sandbox") from None
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)

    def _netns_fd_sync(self, sandbox_id: str) -> int:
        fd = self._netns.get(sandbox_id)
        if fd is not None:
            return fd
        container = self._container(sandbox_id)
        pid = int(container.init_pid) if container.running else -1
        if pid <= 0:
            raise SandboxGone(f"sandbox {sandbox_id} is not running")
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        # The pid might have died and been reused between the two calls.
        if not container.running or int(container.init_pid) != pid:
            os.close(fd)
            raise SandboxGone(f"sandbox {sandbox_id} is not running")
        self._netns[sandbox_id] = fd
        return fd

    def _forget_netns(self, sandbox_id: str) -> None:
        fd = self._netns.pop(sandbox_id, None)
        if fd is not None:
            os.close(fd)

    # -- teardown and inventory ---------------------------------------------

    async def destroy(self, sandbox_id: str) -> None:
        self._drop_channel(sandbox_id, "the sandbox was destroyed")
        self._locks.pop(sandbox_id, None)
        self._forget_netns(sandbox_id)
        await self._run(self._destroy_sync, sandbox_id)

    def _destroy_sync(self, sandbox_id: str) -> None:
        home = self._dir(sandbox_id)
        if (home / "config").exists():
            self._kill_sync(self._container(sandbox_id))
        disk = self._disk(sandbox_id)
        for path in (home, disk):
            if path is not None:
                _remove_tree(path)
        _remove_cgroups(home.name)
        self._ids.pop(self._names.pop(sandbox_id, sandbox_id), None)

    def _kill_sync(self, container: lxc.Container) -> None:
        """Kill the container's init and wait until it has stopped.

        Not ``Container.stop()``: it waits holding the GIL. Sleeping here
        releases it while the container goes down.
        """
        deadline = time.monotonic() + _STOP_TIMEOUT
        while container.running:
            init_pid = container.init_pid  # -1 once stopped: never signal that (it means every process)
            if init_pid > 1:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init_pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"container {container.name} would not stop")
            time.sleep(_STOP_POLL)

    async def running(self) -> set[str]:
        names = await self._run(_running_names, str(self.lxc_path))
        return {self._ids.get(name, name) for name in names}

    async def leftovers(self) -> set[str]:
        places = [self.lxc_path] if self.scratch is None else [self.lxc_path, self.scratch.mountpoint]
        return {
            self._ids.get(p.name, p.name) for place in places if place.exists() for p in place.iterdir() if p.is_dir()
        }


def _running_names(lxc_path: str) -> tuple[str, ...]:
    return tuple(lxc.list_containers(active=True, defined=False, config_path=lxc_path))


def _remove_cgroups(sandbox_id: str, deadline: float = 2.0) -> None:
    """Remove the container's cgroups LXC leaves behind.

    LXC's monitor process tries to remove its own cgroup while still inside
    it, which fails (EBUSY), so every container would leave an empty
    ``lxc.monitor.<name>`` per hierarchy; it empties once the monitor exits.
    """
    pattern = f"lxc.*.{sandbox_id}*"
    paths = [*CGROUP_ROOT.glob(pattern), *CGROUP_ROOT.glob(f"*/{pattern}")]
    give_up = time.monotonic() + deadline
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        while True:
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > give_up:
                    break
                time.sleep(0.01)


def _remove_tree(path: Path) -> None:
    """``rmtree``, retried until the stop deadline.

    Right after init dies, the container's monitor may still be tearing
    down below ``path``; rmtree then meets an entry changing under it.
    """
    deadline = time.monotonic() + _STOP_TIMEOUT
    while True:
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
