"""The jail a VM's QEMU runs in, made with bubblewrap and setpriv.

QEMU parses everything a guest does to its devices and, under TCG,
translates the guest's code, so it is the part of a VM a guest attacks.
Each QEMU therefore runs:

- as a uid (and gid) of its own, handed out per launch (``VmUids``), with
  no supplementary groups (but the one that may open ``/dev/kvm``), no
  capabilities (inheritable, ambient and bounding sets cleared) and
  ``no_new_privs``: ``setpriv``;
- in a mount namespace bubblewrap builds from an empty tmpfs, remounted
  read-only: ``/usr`` and the loader cache, ``/dev/null`` and
  ``/dev/urandom`` (``/dev/net/tun`` in a network slot, ``/dev/kvm`` on
  KVM), and at their own paths only the VM's files: its kernel, initrd,
  image disk and the shared disks below its own read-only, its disk,
  workspace disk and console read-write. No ``/proc``, ``/sys``, ``/tmp``,
  no other VM's file, nothing else of the agent's state;
- with IPC and UTS namespaces of its own and, without a network slot, an
  empty network namespace (so no reach to the host's loopback);
- under QEMU's seccomp filter (``SANDBOX``);
- with an environment of ``PATH`` alone: the agent's may hold its token.

The agent makes QEMU's sockets itself and passes them as listening fds, and
memory snapshots go as fds over QMP, so QEMU has no writable directory.
QEMU's ``-daemonize`` forks after its seccomp filter is on (which denies
both the fork and its ``setsid``) and ``-runas`` is deprecated, so QEMU runs
in the foreground and ``setsid -f`` detaches the chain from the agent: it
outlives agent restarts. bwrap stays as QEMU's parent (a root process that
only waits for it) and reports QEMU's pid on ``--info-fd``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath

import trio

from agent.runtimes.base import RuntimeFailure

# QEMU's seccomp filter: its default deny list, plus obsolete calls,
# set*uid/setsid and friends, fork/clone of processes and exec, and
# scheduler and resource limit changes.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
# The environment of the whole chain, QEMU's included.
ENV = {"PATH": "/usr/bin:/bin"}
# Top-level entries a dynamically linked program may need: bound or linked as on the host.
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache",)
_DEVICES = ("/dev/null", "/dev/urandom")
# How long a claim waits for other launches' (each holds it for tens of
# milliseconds), and how long QEMU's jail may take to be set up; how often each looks.
_CLAIM_TIMEOUT = 30.0
_CLAIM_POLL = 0.01
_SETTLE_TIMEOUT = 10.0
_SETTLE_POLL = 0.002


@dataclass(frozen=True)
class Jail:
    """What one QEMU may touch, and as whom it runs."""

    uid: int  # and gid
    reads: tuple[PurePath, ...]  # files bound read-only, each at its own path
    writes: tuple[PurePath, ...]  # files bound read-write (owned by ``uid``: see ``hand_over``)
    devices: tuple[PurePath, ...] = ()  # beyond /dev/null and /dev/urandom
    groups: tuple[int, ...] = ()  # supplementary groups
    netns: str | None = None  # the network slot to run in; None: an empty network namespace


def argv(jail: Jail, command: list[str], info_fd: int) -> list[str]:
    """The detached command that runs ``command`` in ``jail``; bwrap writes QEMU's pid as JSON to ``info_fd``."""
    files = [*_SYSTEM_FILES, *_DEVICES, *map(str, (*jail.devices, *jail.reads, *jail.writes))]
    args = ["bwrap", "--info-fd", str(info_fd), "--unshare-ipc", "--unshare-uts"]
    if jail.netns is None:
        args.append("--unshare-net")
    # bwrap makes missing parents 0700 (root's only): each is made 0755, shallowest first.
    parents = {str(parent) for path in files for parent in PurePath(path).parents if str(parent) != "/"}
    for parent in sorted(parents, key=lambda p: (p.count("/"), p)):
        args += ["--perms", "0755", "--dir", parent]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in _SYSTEM_DIRS:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for path in _SYSTEM_FILES:
        args += ["--ro-bind", path, path]
    for device in (*_DEVICES, *map(str, jail.devices)):
        args += ["--dev-bind", device, device]
    for path in map(str, jail.reads):
        args += ["--ro-bind", path, path]
    for path in map(str, jail.writes):
        args += ["--bind", path, path]
    args += ["--remount-ro", "/", "--"]
    groups = f"--groups={','.join(map(str, jail.groups))}" if jail.groups else "--clear-groups"
    privileges = [
        "setpriv", f"--reuid={jail.uid}", f"--regid={jail.uid}", groups, "--no-new-privs",
        "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--",
    ]  # fmt: skip
    enter = ["nsenter", f"--net={jail.netns}"] if jail.netns is not None else []
    return ["setsid", "-f", *enter, *args, *privileges, *command]


def hand_over(files: Iterable[Path], uid: int) -> None:
    """Make ``files`` the jailed QEMU's own: read-write for ``uid`` alone."""
    for path in files:
        os.chown(path, uid, uid)
        os.chmod(path, 0o600)


def share(path: Path) -> None:
    """Make a disk VMs share (a template's, a base) read-only for every VM's uid, writable by none."""
    os.chown(path, 0, 0)
    os.chmod(path, 0o444)


@dataclass(frozen=True)
class VmUids:
    """The uids (and gids) VMs' QEMUs run as: ``count`` from ``first``.

    One per launch, the lowest that no live process has, found under a lock
    all agents of the host share (so two never pick the same one) and held
    until the new QEMU visibly runs as it (``settled``). A paused VM holds
    none: it gets a fresh one when it runs again.
    """

    first: int = 200_000
    count: int = 65_536
    lock: Path = Path("/run/chaser/vm-uids.lock")

    @contextlib.asynccontextmanager
    async def claim(self) -> AsyncIterator[int]:
        """A free uid, kept from every other claim until the block ends."""
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            locked = False
            with trio.move_on_after(_CLAIM_TIMEOUT):
                while not locked:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        locked = True
                    except BlockingIOError:
                        await trio.sleep(_CLAIM_POLL)
            if not locked:
                raise RuntimeFailure(f"no VM uid within {_CLAIM_TIMEOUT:g}s: {self.lock} stays locked")
            used = await trio.to_thread.run_sync(uids_in_use)
            free = next((uid for uid in range(self.first, self.first + self.count) if uid not in used), None)
            if free is None:
                raise RuntimeFailure(f"every VM uid ({self.first}-{self.first + self.count - 1}) is in use")
            yield free
        finally:
            os.close(fd)  # and with it the lock


def uids_in_use() -> set[int]:
    """Every uid and gid a live (not zombie) process of the host has, real, effective, saved or fs."""
    used: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = _status(int(entry.name))
            if not fields.get("State", "").startswith("Z"):
                used.update(int(i) for key in ("Uid", "Gid") for i in fields.get(key, "").split())
    return used


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {key: value.strip() for key, _, value in (line.partition(":") for line in f)}


async def settled(pid: int, uid: int) -> bool:
    """Wait until ``pid`` runs as ``uid``; False if it ended first."""
    with trio.move_on_after(_SETTLE_TIMEOUT):
        while True:
            try:
                fields = _status(pid)
            except OSError:
                return False
            if fields.get("State", "").startswith("Z"):
                return False
            if fields.get("Uid", "").split()[:1] == [str(uid)]:
                return True
            await trio.sleep(_SETTLE_POLL)
    raise RuntimeFailure(f"QEMU's jail was not set up within {_SETTLE_TIMEOUT:g}s")
