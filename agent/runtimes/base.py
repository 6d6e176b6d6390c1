"""What every runtime (LXC containers, QEMU microVMs) must do for the agent.

The agent's API, exec, PTY, file and port code (and later CDP) are
written against these types only and never ask which runtime they have, the
way httpcore's connection logic is written once against NetworkBackend.

A runtime manages *sandboxes*: one per session, named by the session id.
Operations: create, start, spawn (a process, streamed, stdin optional),
spawn_pty (a process on a terminal), open_port (a TCP connection to a port
inside), the file operations (open, create, stat, list, mkdir, remove,
rename, tar archive/extract), destroy, and the listing used to re-adopt
sandboxes after an agent restart. Pause, resume and fork (memory
snapshots), and freezing a filesystem inside, only make sense for some
runtimes: the others inherit an ``Unsupported`` answer.

Paths given to the file operations are absolute, normalised and free of
``..`` (see ``agent.endpoints.paths``); a runtime resolves them inside the sandbox's
own root (LXC: in the container's mount namespace; QEMU: in the guest), so
no path or symlink can reach the host.
"""

from __future__ import annotations

import abc
import errno
import signal
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import trio

from chaser.wire.isolation import Limits

# Where a workspace's disk appears inside a sandbox.
WORKSPACE_MOUNT = "/workspace"


class RuntimeFailure(Exception):
    """A runtime operation failed; the message is safe to show a user."""


class SandboxGone(RuntimeFailure):
    """The sandbox does not exist (any more) on this host."""


class Busy(RuntimeFailure):
    """The sandbox has as much open as it may: the request may be tried again later."""


class Unsupported(RuntimeFailure):
    """The runtime cannot do this at all (pause an LXC container, say)."""


@dataclass(frozen=True)
class GuestNetwork:
    """The address the namespace's ``eth0`` holds, and its gateway."""

    address: IPv4Interface
    gateway: IPv4Address


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a runtime needs to create a sandbox."""

    id: str
    image: str
    rootfs: Path  # read-only lower layer, never written
    # A registry image's layers instead (top first, already owned by the
    # containers' ids): the lowers of the sandbox's overlay.
    layers: tuple[Path, ...] = ()
    workspace: Path | None = None  # host directory to show at WORKSPACE_MOUNT
    # A workspace's disk image, for a runtime that attaches it whole (see
    # ``Runtime.workspace_as_device``) and mounts it at WORKSPACE_MOUNT inside.
    workspace_disk: Path | None = None
    # A prepared network namespace to run in (lo up, eth0 configured);
    # None runs with loopback only.
    netns: Path | None = None
    # eth0's configuration in ``netns``, for a runtime whose guest must take
    # it over (a VM bridges its NIC to eth0 and gives the guest the address).
    guest_network: GuestNetwork | None = None
    # Every field set; None runs unlimited (tests of the runtime alone).
    limits: Limits | None = None


@dataclass(frozen=True)
class ProcessSpec:
    """A process to run inside a sandbox.

    ``argv`` is executed directly (PATH is searched inside the sandbox). When
    ``merge_stderr`` is set, stderr shares stdout's stream, which keeps the
    interleaving a terminal would show.
    """

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str | None = None
    merge_stderr: bool = True
    # Give the process a pipe as stdin (``Process.stdin``) instead of /dev/null.
    stdin: bool = False


@dataclass(frozen=True)
class PtySpec:
    """A process to run on a new terminal inside a sandbox."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str | None
    cols: int
    rows: int


class FileError(RuntimeFailure):
    """A file operation failed for a reason the caller can fix.

    ``kind`` is one of: not_found, not_a_directory, is_a_directory,
    not_a_file, exists, not_empty, permission_denied, invalid.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# What an errno from a file operation means to a client (``FileError.kind``).
ERRNO_KINDS = {
    errno.ENOENT: "not_found",
    errno.ENOTDIR: "not_a_directory",
    errno.EISDIR: "is_a_directory",
    errno.EEXIST: "exists",
    errno.ENOTEMPTY: "not_empty",
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.EROFS: "permission_denied",
    errno.ELOOP: "invalid",
    errno.EINVAL: "invalid",
    errno.ENAMETOOLONG: "invalid",
    errno.EXDEV: "invalid",
    errno.EBUSY: "invalid",
    errno.ENOSPC: "no_space",
    errno.EDQUOT: "no_space",
}


def file_error(err: int | None, message: str) -> RuntimeFailure:
    """A ``FileError`` for an errno a client can act on; otherwise a plain failure."""
    kind = ERRNO_KINDS.get(err or 0)
    return FileError(kind, message) if kind else RuntimeFailure(message)


class PortClosed(RuntimeFailure):
    """Nothing accepts connections on that port inside the sandbox."""


@dataclass(frozen=True)
class FileInfo:
    """What ``stat`` and ``list_dir`` tell about one entry (symlinks not followed)."""

    name: str
    path: str
    type: str  # file | directory | symlink | other
    size: int
    mode: int  # permission bits
    mtime: float
    link_target: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "type": self.type,
            "size": self.size,
            "mode": f"{self.mode:04o}",
            "mtime": self.mtime,
            "link_target": self.link_target,
        }


class Process(abc.ABC):
    """A process running in a sandbox, with its output as streams.

    ``kill`` signals the whole process group the process leads, so a timed
    out ``sh -c 'sleep 100 | cat'`` does not leave its children behind.
    """

    stdout: trio.abc.ReceiveStream
    stderr: trio.abc.ReceiveStream | None
    stdin: trio.abc.SendStream | None = None

    @abc.abstractmethod
    async def wait(self) -> int:
        """Wait for exit; the exit code, or 128+N when killed by signal N."""

    @abc.abstractmethod
    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group; a no-op once it has exited."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the streams and any handle; does not kill."""


class PtyProcess(abc.ABC):
    """A process on a terminal: ``terminal`` carries its output and takes its input."""

    terminal: trio.abc.Stream

    @abc.abstractmethod
    async def wait(self) -> int:
        """Wait for exit; the exit code, or 128+N when killed by signal N."""

    @abc.abstractmethod
    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal size (the foreground process gets SIGWINCH)."""

    @abc.abstractmethod
    def signal(self, sig: int) -> None:
        """Send ``sig`` to the terminal's foreground process group, as a keypress would."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Kill the whole session the process leads; a no-op once it has exited."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the terminal and any handle; does not kill."""


class FileReader(abc.ABC):
    """An open regular file in a sandbox, read in chunks."""

    size: int
    mtime: float

    @abc.abstractmethod
    async def read(self, max_bytes: int) -> bytes:
        """The next chunk; b"" at the end."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...


class FileWriter(abc.ABC):
    """A file being written in a sandbox; appears at its path only on ``commit``."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def commit(self) -> None:
        """Atomically put the written content in place of the path."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Drop what was written; the path is left as it was. Idempotent."""


class Runtime(abc.ABC):
    """A way of running sandboxes on this host."""

    name: str

    @abc.abstractmethod
    async def create(self, spec: SandboxSpec) -> None:
        """Prepare the sandbox (root filesystem, config) without starting it."""

    @abc.abstractmethod
    async def start(self, sandbox_id: str) -> None:
        """Boot the sandbox; returns once a process can be spawned in it."""

    @abc.abstractmethod
    async def spawn(self, sandbox_id: str, spec: ProcessSpec) -> Process:
        """Start a process inside a running sandbox."""

    @abc.abstractmethod
    async def spawn_pty(self, sandbox_id: str, spec: PtySpec) -> PtyProcess:
        """Start a process on a new terminal inside a running sandbox."""

    @abc.abstractmethod
    async def open_port(self, sandbox_id: str, port: int) -> trio.abc.Stream:
        """A TCP connection to ``port`` on the sandbox's loopback; ``PortClosed`` if refused."""

    @abc.abstractmethod
    async def open_file(self, sandbox_id: str, path: str) -> FileReader:
        """Open a regular file for reading."""

    @abc.abstractmethod
    async def create_file(self, sandbox_id: str, path: str, *, parents: bool) -> FileWriter:
        """Start writing a file that will replace ``path`` (creating parent directories if asked)."""

    @abc.abstractmethod
    async def stat(self, sandbox_id: str, path: str) -> FileInfo: ...

    @abc.abstractmethod
    async def list_dir(self, sandbox_id: str, path: str, limit: int) -> tuple[list[FileInfo], bool]:
        """Entries of a directory, sorted by name, at most ``limit``; and whether more were left out."""

    @abc.abstractmethod
    async def mkdir(self, sandbox_id: str, path: str, *, parents: bool) -> None: ...

    @abc.abstractmethod
    async def remove(self, sandbox_id: str, path: str, *, recursive: bool) -> None: ...

    @abc.abstractmethod
    async def rename(self, sandbox_id: str, source: str, target: str, *, overwrite: bool) -> None: ...

    @abc.abstractmethod
    async def archive(self, sandbox_id: str, path: str) -> Process:
        """A process writing a tar stream of ``path`` to its stdout; errors on stderr, exit code 0 if all went."""

    @abc.abstractmethod
    async def extract(self, sandbox_id: str, path: str) -> Process:
        """A process extracting the tar stream fed to its stdin into directory ``path`` (created).

        Every member lands inside ``path``: absolute names are taken as
        relative to it, and members that climb out with ``..`` or links
        pointing outside are refused; the process then exits non-zero with
        the reason on its stderr.
        """

    @abc.abstractmethod
    async def destroy(self, sandbox_id: str) -> None:
        """Stop the sandbox and remove all it left on the host; idempotent."""

    @abc.abstractmethod
    async def running(self) -> set[str]:
        """Ids of the sandboxes of this runtime that run right now."""

    @abc.abstractmethod
    async def leftovers(self) -> set[str]:
        """Ids with anything on the host (running or debris)."""

    async def pause(self, sandbox_id: str) -> None:
        """Save the running sandbox whole (memory, devices, disk) to its files and stop it."""
        raise Unsupported(f"the {self.name} runtime cannot pause sandboxes")

    async def resume(self, sandbox_id: str) -> None:
        """Continue a paused sandbox where it stopped; returns once it can spawn."""
        raise Unsupported(f"the {self.name} runtime cannot resume sandboxes")

    async def adopt(self, started_id: str, sandbox_id: str) -> None:
        """Give the running sandbox ``started_id`` (started ahead of any request)
        the id ``sandbox_id``, by which every later call addresses it."""
        raise Unsupported(f"the {self.name} runtime cannot rename sandboxes")

    async def fork(self, source_id: str, spec: SandboxSpec) -> None:
        """Create and start ``spec.id`` from the paused ``source_id``'s saved state,
        with its own copy-on-write disk; the source stays paused."""
        raise Unsupported(f"the {self.name} runtime cannot fork sandboxes")

    def workspace_as_device(self, image: str) -> bool:
        """Whether sandboxes of ``image`` take a workspace as a disk image
        (``SandboxSpec.workspace_disk``) rather than a host directory."""
        return False

    def frozen(self, sandbox_id: str, path: str) -> AbstractAsyncContextManager[None]:
        """Hold the filesystem mounted at ``path`` inside the sandbox still
        (synced, writes blocked) for the block: for a disk it holds as a device."""
        raise Unsupported(f"the {self.name} runtime cannot freeze a filesystem inside a sandbox")

    def describe(self) -> dict[str, dict[str, object]]:
        """For the host info: each runtime this stands for, with what it found out
        about the host (a VM runtime reports its accelerator)."""
        return {self.name: {}}
