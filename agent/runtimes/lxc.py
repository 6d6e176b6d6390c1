"""Sandboxes as LXC system containers, driven through python-lxc.

Each sandbox lives in ``<lxc_path>/<id>/``: the LXC ``config``, the overlay's
writable layer ``delta0`` and its work dir. The root filesystem is
``overlay:<image rootfs>:<delta0>``, mounted by LXC inside the container's
own mount namespace, so creating a sandbox copies nothing and a crashed
container leaves no mount on the host: only the directory, which
``destroy`` removes.

python-lxc calls block (and ``attach`` forks), so they run in worker threads
behind a limiter; processes are waited for through a pidfd on the trio loop.
Terminals, file operations and archives run as functions in an attached
child inside the container (``lxc_inside``), so every path resolves in the
container's own root; ports are reached through a socket made in the
container's network namespace (``netns.tcp_socket_in``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import termios
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import lxc
import trio

from agent import netns
from agent.limits import CGROUP_ROOT, lxc_cgroup_lines, unified_hierarchy
from agent.runtimes import lxc_inside
from agent.runtimes.base import (
    WORKSPACE_MOUNT,
    FileError,
    FileInfo,
    FileReader,
    FileWriter,
    PortClosed,
    Process,
    ProcessSpec,
    PtyProcess,
    PtySpec,
    Runtime,
    RuntimeFailure,
    SandboxGone,
    SandboxSpec,
    file_error,
)
from agent.scratch import ScratchVolume, StorageError

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# The init every container runs: tini reaps orphans, so zombies of
# background jobs don't pile up, and keeps the container alive.
_INIT_IN_CONTAINER = "/.chaser-init"

_START_TIMEOUT = 10
_STOP_TIMEOUT = 10.0
_STOP_POLL = 0.005
# A file operation in the container (stat, mkdir, ...) that takes longer is killed.
_CALL_TIMEOUT = 60.0
_FILE_CHUNK = 1 << 20


_CONFIG_TEMPLATE = """\
lxc.include = /usr/share/lxc/config/common.conf
# common.conf pulls in lxcfs's hooks; its post-stop hook sleeps 0.5 s on
# every stop, and we don't use lxcfs. An empty value clears a hook list.
lxc.hook.mount =
lxc.hook.post-stop =
lxc.uts.name = {hostname}
lxc.rootfs.path = overlay:{lower}:{upper}
lxc.init.cmd = {init} -s -- /bin/sleep infinity
lxc.mount.entry = {init_host} {init_rel} none bind,ro,create=file 0 0
lxc.mount.entry = tmpfs dev/shm tmpfs rw,nosuid,nodev,size=256m,create=dir 0 0
lxc.mount.entry = tmpfs tmp tmpfs rw,nosuid,nodev,size=1g 0 0
lxc.apparmor.profile = unconfined
lxc.tty.max = 0
lxc.autodev = 1
lxc.log.level = ERROR
lxc.log.file = {log}
"""

# A network of its own with only a loopback (brought up after start).
_LOOPBACK_ONLY = "lxc.net.0.type = empty\n"

# Hardening on top of common.conf (pid, mount, ipc, uts namespaces; the
# device allow-list; seccomp denying module loading and kexec): keep only
# the capabilities builds and package managers need, Docker's default set
# less NET_RAW. So no mounts, modules, raw I/O, network administration,
# ptrace of the host, or clock changes. User namespaces are not used: LXC
# 5.0 can idmap only a "dir" rootfs, not our overlay (see the README).
_CAPABILITIES = (
    "lxc.cap.drop =\n"
    "lxc.cap.keep = chown dac_override fowner fsetid kill setgid setuid setpcap"
    " net_bind_service sys_chroot mknod audit_write setfcap\n"
)


def _network_config(spec: SandboxSpec) -> str:
    """Join the pooled namespace prepared for the sandbox, or get a loopback-only one."""
    if spec.netns is None:
        return _LOOPBACK_ONLY
    return f"lxc.namespace.share.net = {spec.netns}\n"


def _limits_config(spec: SandboxSpec) -> str:
    if spec.limits is None:
        return ""
    return "".join(line + "\n" for line in lxc_cgroup_lines(spec.limits, unified=unified_hierarchy()))


class _Child:
    """A child process of the agent, waited for through a pidfd on the trio loop."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)
        self.status: int | None = None

    async def wait(self) -> int:
        while self.status is None:
            await trio.lowlevel.wait_readable(self._pidfd)
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                # Reaped elsewhere; nothing more to learn than that it ended.
                self.status = 255
                break
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                if self.status < 0:
                    self.status = 128 - self.status
        return self.status

    def killpg(self, sig: int, pgid: int | None = None) -> None:
        if self.status is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid or self.pid, sig)

    def close(self) -> None:
        """Drop the handle; reap the process if it has ended, so no zombie is left."""
        if self.status is None:
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.status = os.waitstatus_to_exitcode(status)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


class LxcProcess(Process):
    """A process started by ``lxc attach``, in its own session and group."""

    def __init__(self, pid: int, stdout_fd: int, stderr_fd: int | None, stdin_fd: int | None = None) -> None:
        self._child = _Child(pid)
        self.pid = pid
        self.stdout = trio.lowlevel.FdStream(stdout_fd)
        self.stderr = trio.lowlevel.FdStream(stderr_fd) if stderr_fd is not None else None
        self.stdin = trio.lowlevel.FdStream(stdin_fd) if stdin_fd is not None else None

    async def wait(self) -> int:
        return await self._child.wait()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self._child.killpg(sig)

    async def aclose(self) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                await stream.aclose()
        self._child.close()


class LxcPtyProcess(PtyProcess):
    """A session leader on a terminal of the container; we hold the master side."""

    def __init__(self, pid: int, master_fd: int) -> None:
        self._child = _Child(pid)
        self._master = master_fd
        self.terminal = trio.lowlevel.FdStream(master_fd)

    async def wait(self) -> int:
        return await self._child.wait()

    def resize(self, cols: int, rows: int) -> None:
        if self._master < 0:
            return
        with contextlib.suppress(OSError):
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def signal(self, sig: int) -> None:
        foreground = 0
        if self._master >= 0:
            with contextlib.suppress(OSError):
                foreground = os.tcgetpgrp(self._master)
        self._child.killpg(sig, foreground if foreground > 0 else None)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self._child.killpg(signal.SIGKILL)

    async def aclose(self) -> None:
        # Closing the master hangs up the terminal: what still runs on it gets SIGHUP.
        self._master = -1
        await self.terminal.aclose()
        self._child.close()


class LxcFileReader(FileReader):
    def __init__(self, fd: int, size: int, mtime: float, limiter: trio.CapacityLimiter) -> None:
        self._fd = fd
        self.size = size
        self.mtime = mtime
        self._limiter = limiter

    async def read(self, max_bytes: int) -> bytes:
        return await trio.to_thread.run_sync(os.read, self._fd, max_bytes, limiter=self._limiter)

    async def aclose(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LxcFileWriter(FileWriter):
    """Writes a temporary file in the target's directory; ``commit`` renames it in place."""

    def __init__(self, dir_fd: int, fd: int, temp: str, name: str, limiter: trio.CapacityLimiter) -> None:
        self._dir_fd, self._fd = dir_fd, fd
        self._temp, self._name = temp, name
        self._limiter = limiter

    async def write(self, data: bytes) -> None:
        await trio.to_thread.run_sync(_write_all, self._fd, data, limiter=self._limiter)

    async def commit(self) -> None:
        def finish() -> None:
            os.close(self._fd)
            self._fd = -1
            os.rename(self._temp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            os.close(self._dir_fd)
            self._dir_fd = -1

        try:
            await trio.to_thread.run_sync(finish, limiter=self._limiter)
        except OSError as exc:
            await self.abort()
            raise file_error(exc.errno, f"{self._name}: {exc.strerror}") from None

    async def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._dir_fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self._temp, dir_fd=self._dir_fd)
            os.close(self._dir_fd)
            self._dir_fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _exec_in_container(spec: ProcessSpec) -> int:
    """Runs in the attached child: own session (for group kill), no fd of ours, then exec.

    Servers in this process (the agent's API, the scheduler's in embedded
    mode) keep inheritable listening sockets; closing every descriptor past
    stderr keeps them, and any pipe of the agent, out of the sandbox.
    """
    try:
        lxc_inside.close_inherited()
        os.setsid()
        if spec.cwd:
            os.chdir(spec.cwd)
        os.execvpe(spec.argv[0], list(spec.argv), dict(spec.env))
    except OSError as exc:
        os.write(2, f"chaser: cannot run {spec.argv[0]!r}: {exc.strerror}\n".encode())
    return 127


class LxcRuntime(Runtime):
    name = "lxc"

    def __init__(
        self, lxc_path: Path, init_binary: Path, max_threads: int = 8, scratch: ScratchVolume | None = None
    ) -> None:
        self.lxc_path = lxc_path
        self.init_binary = init_binary
        # Where sandbox directories get a disk quota; None: no disk limit.
        self.scratch = scratch
        self._own_cgroups = _cgroup_dirs_of_self()
        self._limiter = trio.CapacityLimiter(max_threads)
        lxc_path.mkdir(parents=True, exist_ok=True)
        # An open descriptor of each sandbox's network namespace, taken while
        # the container is known to run: unlike a pid, it cannot come to
        # name some other process's (the host's) namespace later.
        self._netns: dict[str, int] = {}

    def _dir(self, sandbox_id: str) -> Path:
        return self.lxc_path / sandbox_id

    def _container(self, sandbox_id: str) -> lxc.Container:
        return lxc.Container(sandbox_id, str(self.lxc_path))

    async def _run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def create(self, spec: SandboxSpec) -> None:
        await self._run(self._create_sync, spec)

    def _disk(self, sandbox_id: str) -> Path | None:
        """The quota-limited directory holding the sandbox's writable layer, if any."""
        return self.scratch.mountpoint / sandbox_id if self.scratch is not None else None

    def _create_sync(self, spec: SandboxSpec) -> None:
        home = self._dir(spec.id)
        home.mkdir(mode=0o700)
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
        (layers / "delta0").mkdir()
        config = _CONFIG_TEMPLATE.format(
            hostname="sandbox",
            lower=spec.rootfs,
            upper=layers / "delta0",
            init=_INIT_IN_CONTAINER,
            init_host=self.init_binary,
            init_rel=_INIT_IN_CONTAINER.lstrip("/"),
            log=home / "lxc.log",
        )
        if spec.workspace is not None:
            config += f"lxc.mount.entry = {spec.workspace} {WORKSPACE_MOUNT.lstrip('/')} none bind,create=dir 0 0\n"
        config += _network_config(spec) + _CAPABILITIES + _limits_config(spec)
        (home / "config").write_text(config)

    async def start(self, sandbox_id: str) -> None:
        pid = await self._run(self._start_sync, sandbox_id)
        if _LOOPBACK_ONLY in (self._dir(sandbox_id) / "config").read_text():
            await self._run(netns.bring_up_loopback, pid)

    def _start_sync(self, sandbox_id: str) -> int:
        container = self._container(sandbox_id)
        if not container.defined:
            raise SandboxGone(f"sandbox {sandbox_id} does not exist")
        if not container.start():
            _move_self_to(self._own_cgroups)
            raise RuntimeFailure(f"container failed to start: {self._log_tail(sandbox_id)}")
        if not container.wait("RUNNING", _START_TIMEOUT):
            raise RuntimeFailure("container did not reach RUNNING")
        _move_self_to(self._own_cgroups)
        return int(container.init_pid)

    def _log_tail(self, sandbox_id: str) -> str:
        try:
            lines = (self._dir(sandbox_id) / "lxc.log").read_text().strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-3:]) or "no log"

    async def spawn(self, sandbox_id: str, spec: ProcessSpec) -> Process:
        return await self._spawn(sandbox_id, _exec_in_container, spec, stdin=spec.stdin, merge_stderr=spec.merge_stderr)

    async def _spawn(
        self, sandbox_id: str, fn: Callable[[Any], int], arg: Any, *, stdin: bool, merge_stderr: bool
    ) -> LxcProcess:
        """Run ``fn(arg)`` in an attached child with pipes as its standard streams."""
        out_r, out_w = os.pipe()
        err_r, err_w = (None, out_w) if merge_stderr else os.pipe()
        in_r, in_w = os.pipe() if stdin else (None, None)
        ours = [fd for fd in (out_r, err_r, in_w) if fd is not None]
        theirs = {fd for fd in (out_w, err_w, in_r) if fd is not None}
        try:
            pid = await self._run(self._attach_sync, sandbox_id, fn, arg, in_r, out_w, err_w)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        return LxcProcess(pid, out_r, err_r, in_w)

    def _attach_sync(
        self, sandbox_id: str, fn: Callable[[Any], int], arg: Any, in_fd: int | None, out_fd: int, err_fd: int
    ) -> int:
        container = self._container(sandbox_id)
        if not container.running:
            raise SandboxGone(f"sandbox {sandbox_id} is not running")
        with open(os.devnull, "rb") as devnull:
            pid = container.attach(
                fn,
                arg,
                env_policy=lxc.LXC_ATTACH_CLEAR_ENV,
                stdin=in_fd if in_fd is not None else devnull.fileno(),
                stdout=out_fd,
                stderr=err_fd,
            )
        if pid < 0:
            raise RuntimeFailure("attach to container failed")
        return int(pid)

    def _call_sync(self, sandbox_id: str, fn: Callable[..., int], args: Sequence[Any]) -> tuple[Any, list[int], int]:
        """Run ``fn(sock_fd, *args)`` in the container; its reply and descriptors, and its pid.

        The child answers on a socket: descriptors first (SCM_RIGHTS), then
        a JSON document until end of stream.
        """
        parent, child = socket.socketpair()
        with parent, child, open(os.devnull, "r+b") as devnull:
            container = self._container(sandbox_id)
            if not container.running:
                raise SandboxGone(f"sandbox {sandbox_id} is not running")
            pid = container.attach(
                _apply,
                (fn, (child.fileno(), *args)),
                env_policy=lxc.LXC_ATTACH_CLEAR_ENV,
                stdin=devnull.fileno(),
                stdout=devnull.fileno(),
                stderr=devnull.fileno(),
            )
            if pid < 0:
                raise RuntimeFailure("attach to container failed")
            child.close()
            parent.settimeout(_CALL_TIMEOUT)
            fds: list[int] = []
            try:
                _, fds, _, _ = socket.recv_fds(parent, 1, 4)
                data = bytearray()
                while chunk := parent.recv(1 << 16):
                    data += chunk
            except OSError:
                for fd in fds:
                    os.close(fd)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise RuntimeFailure("the sandbox did not answer a file operation in time") from None
        return (json.loads(data) if data else None), fds, pid

    async def _call(self, sandbox_id: str, fn: Callable[..., lxc_inside.Reply], *args: Any) -> tuple[Any, list[int]]:
        """Run a ``lxc_inside`` function in the container; its result and descriptors."""

        def call() -> tuple[Any, list[int]]:
            reply, fds, pid = self._call_sync(sandbox_id, _run_call, (fn, args))
            os.waitpid(pid, 0)
            return reply, fds

        reply, fds = await self._run(call)
        if reply is None:
            for fd in fds:
                os.close(fd)
            raise RuntimeFailure("the file operation ended without an answer")
        if "ok" in reply:
            return reply["ok"], fds
        if "refused" in reply:
            raise FileError(reply["refused"], reply["message"])
        raise file_error(reply.get("errno"), reply.get("message", "file operation failed"))

    async def spawn_pty(self, sandbox_id: str, spec: PtySpec) -> PtyProcess:
        args = (list(spec.argv), dict(spec.env), spec.cwd, spec.cols, spec.rows)

        def start() -> tuple[int, int]:
            _, fds, pid = self._call_sync(sandbox_id, lxc_inside.open_terminal, args)
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                os.waitpid(pid, 0)
                raise RuntimeFailure("could not open a terminal in the sandbox")
            return pid, fds[0]

        pid, master = await self._run(start)
        return LxcPtyProcess(pid, master)

    async def open_port(self, sandbox_id: str, port: int) -> trio.abc.Stream:
        netns_fd = await self._run(self._netns_fd_sync, sandbox_id)
        sock = trio.socket.from_stdlib_socket(
            await trio.to_thread.run_sync(netns.tcp_socket_in, netns_fd, limiter=self._limiter)
        )
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

    async def open_file(self, sandbox_id: str, path: str) -> FileReader:
        info, fds = await self._call(sandbox_id, lxc_inside.open_for_reading, path)
        return LxcFileReader(fds[0], info["size"], info["mtime"], self._limiter)

    async def create_file(self, sandbox_id: str, path: str, *, parents: bool) -> FileWriter:
        info, fds = await self._call(sandbox_id, lxc_inside.open_for_writing, path, parents)
        return LxcFileWriter(fds[0], fds[1], info["temp"], info["name"], self._limiter)

    async def stat(self, sandbox_id: str, path: str) -> FileInfo:
        info, _ = await self._call(sandbox_id, lxc_inside.stat_path, path)
        return FileInfo(**info)

    async def list_dir(self, sandbox_id: str, path: str, limit: int) -> tuple[list[FileInfo], bool]:
        listing, _ = await self._call(sandbox_id, lxc_inside.list_dir, path, limit)
        return [FileInfo(**e) for e in listing["entries"]], bool(listing["truncated"])

    async def mkdir(self, sandbox_id: str, path: str, *, parents: bool) -> None:
        await self._call(sandbox_id, lxc_inside.make_dir, path, parents)

    async def remove(self, sandbox_id: str, path: str, *, recursive: bool) -> None:
        await self._call(sandbox_id, lxc_inside.remove, path, recursive)

    async def rename(self, sandbox_id: str, source: str, target: str, *, overwrite: bool) -> None:
        await self._call(sandbox_id, lxc_inside.rename, source, target, overwrite)

    async def archive(self, sandbox_id: str, path: str) -> Process:
        return await self._spawn(sandbox_id, lxc_inside.write_archive, path, stdin=False, merge_stderr=False)

    async def extract(self, sandbox_id: str, path: str) -> Process:
        return await self._spawn(sandbox_id, lxc_inside.extract_archive, path, stdin=True, merge_stderr=False)

    async def destroy(self, sandbox_id: str) -> None:
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
        _remove_cgroups(sandbox_id)

    def _kill_sync(self, container: lxc.Container) -> None:
        """Kill the container's init and wait until it has stopped.

        Not ``Container.stop()``: it waits holding the GIL, and a dying
        container's init waits in turn for the agent to reap the processes
        it attached (children of this process), which needs the GIL: the
        agent would hang whenever a sandbox is destroyed under a running
        exec. Sleeping here releases the GIL while the loop reaps them.
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
        return set(names)

    async def leftovers(self) -> set[str]:
        places = [self.lxc_path] if self.scratch is None else [self.lxc_path, self.scratch.mountpoint]
        return {p.name for place in places if place.exists() for p in place.iterdir() if p.is_dir()}


def _apply(packed: tuple[Callable[..., int], Sequence[Any]]) -> int:
    """Attach entry point for functions of several arguments (attach passes one)."""
    fn, args = packed
    return fn(*args)


def _run_call(sock_fd: int, fn: Callable[..., lxc_inside.Reply], args: Sequence[Any]) -> int:
    return lxc_inside.run_call(lxc_inside.Call(fn, args, sock_fd))


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


def _cgroup_dirs_of_self() -> list[Path]:
    """The directory of each cgroup hierarchy this process belongs to."""
    mounts: list[tuple[str, set[str], Path]] = []  # fstype, super options, mount point
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append((fstype, set(fields[-1].split(",")), Path(fields[4])))
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for fstype, options, point in mounts:
            wanted = set(controllers.split(",")) if controllers else set()
            if (fstype == "cgroup2" and not wanted) or (fstype == "cgroup" and wanted and wanted <= options):
                dirs.append(point / path.lstrip("/"))
                break
    return dirs


def _move_self_to(dirs: list[Path]) -> None:
    """Put this process back where it was: python-lxc's start leaves its caller in the
    container's ``lxc.monitor.<name>`` cgroups, where it would keep them alive (and
    be accounted) until the next start."""
    for directory in dirs:
        with contextlib.suppress(OSError):
            (directory / "cgroup.procs").write_text(str(os.getpid()))


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
