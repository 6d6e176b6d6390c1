"""Sandboxes as LXC system containers, driven through python-lxc.

Each sandbox lives in ``<lxc_path>/<id>/``: the LXC ``config``, the overlay's
writable layer ``delta0`` and its work dir. The root filesystem is
``overlay:<image rootfs>:<delta0>``, mounted by LXC inside the container's
own mount namespace, so creating a sandbox copies nothing and a crashed
container leaves no mount on the host: only the directory, which
``destroy`` removes.

python-lxc calls block (and ``attach`` forks), so they run in worker threads
behind a limiter; processes are waited for through a pidfd on the trio loop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, TypeVarTuple

import lxc
import trio

from agent import netns
from agent.runtimes.base import (
    Process,
    ProcessSpec,
    Runtime,
    RuntimeFailure,
    SandboxGone,
    SandboxSpec,
)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# The init every container runs: tini reaps orphans, so zombies of
# background jobs don't pile up, and keeps the container alive.
_INIT_IN_CONTAINER = "/.chaser-init"

_START_TIMEOUT = 10
_STOP_TIMEOUT = 10.0
_STOP_POLL = 0.005

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
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.tty.max = 0
lxc.autodev = 1
lxc.log.level = ERROR
lxc.log.file = {log}
"""


class LxcProcess(Process):
    """A process started by ``lxc attach``, in its own session and group."""

    def __init__(self, pid: int, stdout_fd: int, stderr_fd: int | None) -> None:
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)
        self._status: int | None = None
        self.stdout = trio.lowlevel.FdStream(stdout_fd)
        self.stderr = trio.lowlevel.FdStream(stderr_fd) if stderr_fd is not None else None

    async def wait(self) -> int:
        while self._status is None:
            await trio.lowlevel.wait_readable(self._pidfd)
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                # Reaped elsewhere; nothing more to learn than that it ended.
                self._status = 255
                break
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
                if self._status < 0:
                    self._status = 128 - self._status
        return self._status

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self._status is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    async def aclose(self) -> None:
        await self.stdout.aclose()
        if self.stderr is not None:
            await self.stderr.aclose()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


def _exec_in_container(spec: ProcessSpec) -> int:
    """Runs in the attached child: own session (for group kill), no fd of ours, then exec.

    Servers in this process (the agent's API, the scheduler's in embedded
    mode) keep inheritable listening sockets; closing every descriptor past
    stderr keeps them, and any pipe of the agent, out of the sandbox.
    """
    try:
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.setsid()
        if spec.cwd:
            os.chdir(spec.cwd)
        os.execvpe(spec.argv[0], list(spec.argv), dict(spec.env))
    except OSError as exc:
        os.write(2, f"chaser: cannot run {spec.argv[0]!r}: {exc.strerror}\n".encode())
    return 127


class LxcRuntime(Runtime):
    name = "lxc"

    def __init__(self, lxc_path: Path, init_binary: Path, max_threads: int = 8) -> None:
        self.lxc_path = lxc_path
        self.init_binary = init_binary
        self._limiter = trio.CapacityLimiter(max_threads)
        lxc_path.mkdir(parents=True, exist_ok=True)

    def _dir(self, sandbox_id: str) -> Path:
        return self.lxc_path / sandbox_id

    def _container(self, sandbox_id: str) -> lxc.Container:
        return lxc.Container(sandbox_id, str(self.lxc_path))

    async def _run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def create(self, spec: SandboxSpec) -> None:
        await self._run(self._create_sync, spec)

    def _create_sync(self, spec: SandboxSpec) -> None:
        home = self._dir(spec.id)
        home.mkdir(mode=0o700)
        (home / "delta0").mkdir()
        config = _CONFIG_TEMPLATE.format(
            hostname="sandbox",
            lower=spec.rootfs,
            upper=home / "delta0",
            init=_INIT_IN_CONTAINER,
            init_host=self.init_binary,
            init_rel=_INIT_IN_CONTAINER.lstrip("/"),
            log=home / "lxc.log",
        )
        (home / "config").write_text(config)

    async def start(self, sandbox_id: str) -> None:
        pid = await self._run(self._start_sync, sandbox_id)
        await self._run(netns.bring_up_loopback, pid)

    def _start_sync(self, sandbox_id: str) -> int:
        container = self._container(sandbox_id)
        if not container.defined:
            raise SandboxGone(f"sandbox {sandbox_id} does not exist")
        if not container.start():
            raise RuntimeFailure(f"container failed to start: {self._log_tail(sandbox_id)}")
        if not container.wait("RUNNING", _START_TIMEOUT):
            raise RuntimeFailure("container did not reach RUNNING")
        return int(container.init_pid)

    def _log_tail(self, sandbox_id: str) -> str:
        try:
            lines = (self._dir(sandbox_id) / "lxc.log").read_text().strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-3:]) or "no log"

    async def spawn(self, sandbox_id: str, spec: ProcessSpec) -> Process:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe() if not spec.merge_stderr else (None, out_w)
        try:
            pid = await self._run(self._attach_sync, sandbox_id, spec, out_w, err_w)
        except BaseException:
            for fd in (out_r, err_r):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            os.close(out_w)
            if err_w != out_w:
                os.close(err_w)
        return LxcProcess(pid, out_r, err_r)

    def _attach_sync(self, sandbox_id: str, spec: ProcessSpec, out_fd: int, err_fd: int) -> int:
        container = self._container(sandbox_id)
        if not container.running:
            raise SandboxGone(f"sandbox {sandbox_id} is not running")
        with open(os.devnull, "rb") as devnull:
            pid = container.attach(
                _exec_in_container,
                spec,
                env_policy=lxc.LXC_ATTACH_CLEAR_ENV,
                stdin=devnull.fileno(),
                stdout=out_fd,
                stderr=err_fd,
            )
        if pid < 0:
            raise RuntimeFailure("attach to container failed")
        return int(pid)

    async def destroy(self, sandbox_id: str) -> None:
        await self._run(self._destroy_sync, sandbox_id)

    def _destroy_sync(self, sandbox_id: str) -> None:
        home = self._dir(sandbox_id)
        if (home / "config").exists():
            self._kill_sync(self._container(sandbox_id))
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(home)

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
        return {p.name for p in self.lxc_path.iterdir() if p.is_dir()}


def _running_names(lxc_path: str) -> tuple[str, ...]:
    return tuple(lxc.list_containers(active=True, defined=False, config_path=lxc_path))
