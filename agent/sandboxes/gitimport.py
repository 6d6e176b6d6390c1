"""Cloning a Git repository onto a new workspace disk, inside a throwaway sandbox.

A repository's URL and server are the tenant's to aim, so the git client
that talks to them is treated like any code of theirs: it runs in a sandbox
made for the clone (a container of the default image, as the containers'
unprivileged root), with the new disk at /workspace, destroyed afterwards
whatever happens. Files come out owned by the containers' range as written.

Its network is a slot from the sessions' pool, under their firewall, whose
policy allows the Git host's addresses on the URL's port and nothing else:
never the agent's host (its loopback is the sandbox's own), another sandbox
or a blocked network. The agent resolves the Git host's name (a sandbox has
no resolver) and pins git to those addresses, so it connects nowhere else.

The token travels as an ``Authorization`` header set through ``GIT_CONFIG_*``
environment variables of git's process: never on a command line (``ps``
shows those), never in the clone's ``.git/config``, never in an error
message. Git runs with no system or user configuration, prompts off (a
missing credential fails rather than hangs), redirects not followed (the
clone cannot be steered to another host), only the URL's own protocol
allowed, and no submodules.
"""

from __future__ import annotations

import base64
import os
import socket
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address
from pathlib import Path
from urllib.parse import urlsplit

import trio

from agent.runtimes.base import WORKSPACE_MOUNT, ProcessSpec, RuntimeFailure
from agent.runtimes.execution import OutputTail, run_process
from agent.sandboxes.manager import DEFAULT_ENV, SandboxManager
from agent.storage.disks import DiskManager
from chaser.wire import errors
from chaser.wire.isolation import EgressRule

# The image of the clone's sandbox: it has git (and CA certificates).
IMPORT_IMAGE = "default"
# A transfer slower than this for this long is abandoned (bytes/s, seconds).
_LOW_SPEED = ("1000", "60")
_PORTS = {"http": 80, "https": 443}
# At most this many of the Git host's addresses are allowed (one rule each).
_MAX_ADDRESSES = 16
# How much of git's stderr is kept for the error message (its last line).
_STDERR_KEPT = 64 * 1024


class ImportFailed(Exception):
    """The clone failed; the message (git's own words) is safe to show."""


@dataclass(frozen=True)
class GitSource:
    url: str  # http(s) URL of the repository
    ref: str | None = None  # branch, tag or commit; the default branch if None
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Remote:
    """Where the clone may connect: the URL's host and port, at the addresses it resolved to."""

    host: str
    port: int
    addresses: tuple[IPv4Address, ...]
    by_name: bool  # the URL names the host (not its address): git must be told the addresses

    def egress(self) -> list[EgressRule]:
        return [EgressRule(cidr=f"{address}/32", ports=[self.port]) for address in self.addresses]

    def pinning(self) -> str | None:
        """curl's ``HOST:PORT:ADDRESSES`` for a host given by name."""
        if not self.by_name:
            return None
        return f"{self.host}:{self.port}:{','.join(str(a) for a in self.addresses)}"


async def locate(url: str) -> Remote:
    """The repository URL's host and port, with its IPv4 addresses (sandboxes have no other)."""
    parts = urlsplit(url)
    if parts.scheme not in _PORTS:
        raise ImportFailed("only http(s) repository URLs are supported")
    try:
        port = parts.port or _PORTS[parts.scheme]
    except ValueError:
        raise ImportFailed("the repository URL's port is not a port number") from None
    host = parts.hostname
    if not host:
        raise ImportFailed("the repository URL names no host")
    try:
        return Remote(host, port, (IPv4Address(host),), by_name=False)
    except ValueError:
        pass  # a name
    try:
        found = await trio.socket.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ImportFailed(f"could not resolve host {host} to an IPv4 address") from None
    addresses = tuple(dict.fromkeys(IPv4Address(info[4][0]) for info in found))
    return Remote(host, port, addresses[:_MAX_ADDRESSES], by_name=True)


def _basic(token: str) -> str:
    return base64.b64encode(f"x-access-token:{token}".encode()).decode()


def git_environment(source: GitSource, remote: Remote) -> dict[str, str]:
    """git's whole environment in the sandbox: its configuration, the token included."""
    config = {
        "http.followRedirects": "false",
        "http.lowSpeedLimit": _LOW_SPEED[0],
        "http.lowSpeedTime": _LOW_SPEED[1],
        "credential.helper": "",
    }
    pinning = remote.pinning()
    if pinning is not None:
        config["http.curloptResolve"] = pinning
    if source.token:
        config["http.extraHeader"] = f"Authorization: Basic {_basic(source.token)}"
    env = {
        "PATH": DEFAULT_ENV["PATH"],
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": urlsplit(source.url).scheme,
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for i, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def _redacted(text: str, source: GitSource) -> str:
    if source.token:
        text = text.replace(source.token, "***").replace(_basic(source.token), "***")
    return text


class GitImporter:
    """Makes workspace disks holding a clone of a repository, each clone in a sandbox of its own."""

    def __init__(self, sandboxes: SandboxManager, disks: DiskManager) -> None:
        self.sandboxes = sandboxes
        self.disks = disks

    async def import_git(self, disk_id: str, size_bytes: int, source: GitSource, *, replace: bool) -> None:
        """A fresh disk holding a clone of ``source``; with ``replace``, it takes the old one's place."""
        try:
            await self.disks.fill(disk_id, size_bytes, partial(self._clone, source), replace=replace)
        except ImportFailed as exc:
            raise errors.InvalidInput(f"cloning the repository failed: {exc}", code="import_failed") from None

    async def _clone(self, source: GitSource, root: Path) -> None:
        """Clone into ``root`` (the new disk, mounted on the host) from a sandbox holding it.

        The clone is the disk's whole content, so a session finds the
        repository at the workspace's root.
        """
        remote = await locate(source.url)
        env = git_environment(source, remote)
        async with self.sandboxes.throwaway(IMPORT_IMAGE, root, remote.egress()) as sandbox_id:
            checkout = [] if source.ref is None else ["--no-checkout"]
            await self._git(sandbox_id, source, env, "clone", "--quiet", *checkout, "--", source.url, WORKSPACE_MOUNT)
            if source.ref is not None:
                try:
                    await self._git(sandbox_id, source, env, "-C", WORKSPACE_MOUNT, "checkout", "--quiet", source.ref)
                except ImportFailed:
                    raise ImportFailed(f"ref {source.ref!r} not found in the repository") from None

    async def _git(self, sandbox_id: str, source: GitSource, env: dict[str, str], *args: str) -> None:
        """Run git in the sandbox, as its root; ``ImportFailed`` with git's last words if it fails."""
        stderr = OutputTail(_STDERR_KEPT)

        async def keep(stream: str, chunk: bytes) -> None:
            if stream == "stderr":
                stderr.write(chunk)

        spec = ProcessSpec(argv=["git", *args], env=env, cwd="/", merge_stderr=False)
        try:
            process = await self.sandboxes.runtime.spawn(sandbox_id, spec)
            outcome = await run_process(process, None, keep)
        except RuntimeFailure as exc:
            raise errors.Unavailable(f"the import's sandbox failed: {exc}", code="import_sandbox_failed") from None
        if outcome.exit_code != 0:
            lines = [line for line in stderr.text().splitlines() if line.strip()]
            raise ImportFailed(_redacted(lines[-1] if lines else f"git exited {outcome.exit_code}", source))
