"""What every runtime (LXC containers, QEMU microVMs) must do for the agent.

The agent's API, exec collector and (later) PTY, file, port and CDP code are
written against these types only and never ask which runtime they have, the
way httpcore's connection logic is written once against NetworkBackend.

A runtime manages *sandboxes*: one per session, named by the session id.
Operations present now: create, start, spawn (a process, streamed),
open_port (a TCP connection to a port inside), destroy,
and the listing used to re-adopt sandboxes after an agent restart. PTYs,
file transfer, port connections, snapshot and restore are added here as
further abstract methods when their issues land, so every runtime has to
answer for them.
"""

from __future__ import annotations

import abc
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from chaser.isolation import Limits

# Where a workspace's disk appears inside a sandbox.
WORKSPACE_MOUNT = "/workspace"


class RuntimeFailure(Exception):
    """A runtime operation failed; the message is safe to show a user."""


class SandboxGone(RuntimeFailure):
    """The sandbox does not exist (any more) on this host."""


class PortClosed(RuntimeFailure):
    """Nothing accepts connections on that port inside the sandbox."""


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a runtime needs to create a sandbox."""

    id: str
    image: str
    rootfs: Path  # read-only lower layer, never written
    workspace: Path | None = None  # host directory to show at WORKSPACE_MOUNT
    # A prepared network namespace to run in (lo up, eth0 configured);
    # None runs with loopback only.
    netns: Path | None = None
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


class Process(abc.ABC):
    """A process running in a sandbox, with its output as streams.

    ``kill`` signals the whole process group the process leads, so a timed
    out ``sh -c 'sleep 100 | cat'`` does not leave its children behind.
    """

    stdout: trio.abc.ReceiveStream
    stderr: trio.abc.ReceiveStream | None

    @abc.abstractmethod
    async def wait(self) -> int:
        """Wait for exit; the exit code, or 128+N when killed by signal N."""

    @abc.abstractmethod
    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group; a no-op once it has exited."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the streams and any handle; does not kill."""


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
    async def open_port(self, sandbox_id: str, port: int) -> trio.abc.Stream:
        """A TCP connection to ``port`` on the sandbox's loopback; ``PortClosed`` if refused."""

    @abc.abstractmethod
    async def destroy(self, sandbox_id: str) -> None:
        """Stop the sandbox and remove all it left on the host; idempotent."""

    @abc.abstractmethod
    async def running(self) -> set[str]:
        """Ids of the sandboxes of this runtime that run right now."""

    @abc.abstractmethod
    async def leftovers(self) -> set[str]:
        """Ids with anything on the host (running or debris)."""
