"""The agent's book of sandboxes: create with full rollback, destroy, recover.

A record per sandbox is written to ``<state_dir>/sandboxes/<id>.json``
*before* the runtime touches anything, so whatever a crash interrupts is
known on the next start: ``recover`` re-adopts sandboxes that still run (or
sit paused, their snapshot complete) and destroys the debris of all others.
Pause, resume and destroy of one sandbox take its lock, so they never
overlap.

A create that a container started ahead can serve takes one from the warm
pool (``agent.sandboxes.warm_pool``): the runtime gives it the session's id, and its
bare network lease gets the session's policy; everything else boots.

Besides sessions, the agent runs throwaway sandboxes for work it does on a
tenant's behalf (a Git import): no session and no record, they live only
as long as the block that made them (``throwaway``).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, Protocol

import trio

from agent.browser import Browsers
from agent.config import LimitsConfig
from agent.network.addressing import SLOT_PREFIXLEN
from agent.network.firewall import FirewallError
from agent.network.pool import Lease, SlotPool, lease_from_json
from agent.registry.skopeo import Credentials
from agent.runtimes.base import (
    WORKSPACE_MOUNT,
    Busy,
    GuestNetwork,
    Process,
    ProcessSpec,
    Runtime,
    RuntimeFailure,
    SandboxGone,
    SandboxSpec,
    Unsupported,
)
from agent.runtimes.execution import ExecResult, collect
from agent.sandboxes.images import Image, ImageStore
from agent.sandboxes.warm_pool import WarmPool
from agent.storage.disks import DiskManager
from chaser.wire import errors
from chaser.wire.isolation import EgressRule, Limits, NetworkMode

log = logging.getLogger(__name__)

DEFAULT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
DEFAULT_CWD = "/root"
# Why sandboxes ended on their own, kept (the most recent ones) for the
# heartbeat, so the scheduler can tell users more than "it stopped".
_ENDINGS_KEPT = 256


@dataclass
class Sandbox:
    id: str
    image: str
    runtime: str
    status: str  # creating | running | pausing | paused | resuming | destroying
    created_at: float
    workspace: str | None = None  # id of the workspace disk it holds
    session_type: str = "sandbox"  # or "browser": Chromium runs in it
    # The network lease (netns path, address, policy: see ``Lease.to_json``)
    # and the limits in force; None for a sandbox without them.
    network: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    # A registry image: the digest its reference resolved to, and its
    # config's defaults for every process (None: the built-in defaults).
    image_digest: str | None = None
    env: dict[str, str] | None = None
    cwd: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def process_defaults(self, env: Mapping[str, str], cwd: str | None) -> tuple[dict[str, str], str]:
        """A process's environment and directory: the call's, over the image's, over the built-in ones."""
        return {**DEFAULT_ENV, **(self.env or {}), **env}, cwd or self.cwd or DEFAULT_CWD


@dataclass(frozen=True)
class Warm:
    """A container started ahead of any request: its id until adopted, and its bare network lease."""

    id: str
    lease: Lease | None


class Connections(Protocol):
    """The live connections to sandboxes (leases, terminals), ended with their sandbox."""

    def count(self, sandbox_id: str) -> int: ...

    async def end(self, sandbox_id: str, reason: str) -> None:
        """Refuse new connections and close the open ones, saying ``reason``."""

    def forget(self, sandbox_id: str) -> None:
        """The sandbox is gone; drop all that was kept about it."""

    def reopen(self, sandbox_id: str) -> None:
        """Take new connections again after ``end`` (the sandbox was paused, not destroyed)."""


class SandboxManager:
    def __init__(
        self,
        runtime: Runtime,
        images: ImageStore,
        state_dir: Path,
        *,
        max_sandboxes: int,
        start_timeout: float,
        output_limit: int,
        disks: DiskManager | None = None,
        network: SlotPool | None = None,
        limits: LimitsConfig | None = None,
        browsers: Browsers | None = None,
    ) -> None:
        self.runtime = runtime
        # Without it, this host runs no browser sessions.
        self.browsers = browsers
        self.disks = disks
        # Without a pool, sandboxes get a loopback-only network; without
        # limits, they run unlimited (both only in tests of the runtime).
        self.network = network
        self.limits = limits
        self.images = images
        self.records_dir = state_dir / "sandboxes"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.max_sandboxes = max_sandboxes
        self.start_timeout = start_timeout
        self.output_limit = output_limit
        self._sandboxes: dict[str, Sandbox] = {}
        # Throwaway sandboxes alive now: they count against the capacity.
        self._throwaways: set[str] = set()
        # Creates in flight, so a destroy can cancel one and wait for its rollback.
        self._creating: dict[str, tuple[trio.CancelScope, trio.Event]] = {}
        self._lifecycle: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        # Held by pause and resume, and by a forced snapshot of a workspace
        # the sandbox holds as a device, so neither happens during the other.
        # (Not the lifecycle lock: a destroy holds that while it detaches the
        # disk, which waits for the snapshot.)
        self._still: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        self.connections: Connections | None = None
        self.endings: OrderedDict[str, str] = OrderedDict()
        self.warm: WarmPool[Warm] | None = None
        # What a sandbox asking for nothing gets: the warm pool's containers have it.
        self._default_limits = Limits().resolved(limits.default, limits.max) if limits is not None else None

    # -- persistence -----------------------------------------------------

    def _record_path(self, sandbox_id: str) -> Path:
        return self.records_dir / f"{sandbox_id}.json"

    def _save(self, sandbox: Sandbox) -> None:
        tmp = self._record_path(sandbox.id).with_suffix(".tmp")
        tmp.write_text(json.dumps(sandbox.to_json()))
        os.replace(tmp, self._record_path(sandbox.id))

    def _forget(self, sandbox_id: str) -> None:
        self._sandboxes.pop(sandbox_id, None)
        self._record_path(sandbox_id).unlink(missing_ok=True)

    # -- lifecycle -------------------------------------------------------

    async def recover(self) -> None:
        """Adopt what still runs from a previous agent; remove everything else."""
        running = await self.runtime.running()
        known: dict[str, Sandbox] = {}
        for path in self.records_dir.glob("*.json"):
            try:
                record = Sandbox(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                log.warning("unreadable sandbox record %s, removing", path)
                path.unlink(missing_ok=True)
                continue
            known[record.id] = record
        for path in self.records_dir.glob("*.tmp"):
            path.unlink(missing_ok=True)
        leftovers = await self.runtime.leftovers()
        for sandbox_id in known.keys() | leftovers:
            sandbox = known.get(sandbox_id)
            if sandbox is not None and (
                (sandbox.status == "running" and sandbox_id in running)
                or (sandbox.status == "paused" and sandbox_id in leftovers and sandbox_id not in running)
            ):
                self._sandboxes[sandbox_id] = sandbox
                log.info("re-adopted sandbox %s", sandbox_id, extra={"session_id": sandbox_id})
            else:
                log.info("removing debris of sandbox %s", sandbox_id, extra={"session_id": sandbox_id})
                await self.runtime.destroy(sandbox_id)
                self._forget(sandbox_id)
        if self.disks is not None:
            held = {s.id: s.workspace for s in self.sandboxes() if s.workspace is not None}
            devices = {i: self._freezer(i) for i in held if self.runtime.workspace_as_device(self.get(i).image)}
            await self.disks.recover(held, devices)

    async def reap(self) -> list[str]:
        """Remove sandboxes that died on their own (OOM, a crash inside, an admin)."""
        # Book first, runtime second: a create finishing in between is then
        # absent from the book snapshot, not mistaken for a dead sandbox.
        booked = [s.id for s in self.sandboxes() if s.status == "running"]
        running = await self.runtime.running()
        dead = [sandbox_id for sandbox_id in booked if sandbox_id not in running]
        for sandbox_id in dead:
            log.warning("sandbox died on its own; removing it", extra={"session_id": sandbox_id})
            await self._remove(sandbox_id, "the session's sandbox stopped")
        return dead

    def leases(self) -> list[Lease]:
        """Network leases of the sandboxes kept, for the pool to re-adopt at start."""
        if self.network is None:
            return []
        plan = self.network.plan
        return [lease_from_json(plan, s.id, s.network) for s in self._sandboxes.values() if s.network is not None]

    async def create(
        self,
        sandbox_id: str,
        image_name: str,
        workspace: str | None = None,
        *,
        network: NetworkMode = "egress",
        egress_allow: list[EgressRule] | None = None,
        limits: Limits | None = None,
        fork_from: str | None = None,
        session_type: str = "sandbox",
        credentials: Credentials | None = None,
        account: str | None = None,
    ) -> Sandbox:
        """Create and start a sandbox: booted from its image, or forked from a paused one.

        A fork runs the source's image with the source's limits (its memory
        is the snapshot's), and no workspace: a disk has one holder. A
        registry image is pulled first if this host lacks it, with
        ``credentials`` and on behalf of ``account``.
        """
        if session_type == "browser" and self.browsers is None:
            raise errors.Unavailable("this host runs no browser sessions", code="no_browser")
        if sandbox_id in self._sandboxes:
            raise errors.Conflict(f"sandbox {sandbox_id} already exists")
        self._check_room()
        if workspace is not None and self.disks is None:
            raise errors.Unavailable("this host has no storage pool", code="no_storage")
        if fork_from is not None:
            source = self.get(fork_from)
            if source.status != "paused":
                raise errors.Conflict(f"sandbox {fork_from} is {source.status}; only a paused one can be forked")
            if source.workspace is not None or workspace is not None:
                raise errors.Conflict("a sandbox holding a workspace cannot be forked", code="fork_with_workspace")
            image_name = source.image
            limits = Limits(**source.limits) if source.limits is not None else None
        image = await self.images.find(image_name, credentials, account)
        if sandbox_id in self._sandboxes:  # made by a create that finished while this one pulled
            raise errors.Conflict(f"sandbox {sandbox_id} already exists")
        resolved = (limits or Limits()).resolved(self.limits.default, self.limits.max) if self.limits else None
        warm = None
        if self.warm is not None:
            if (
                fork_from is None
                and workspace is None
                and session_type == "sandbox"
                and resolved == self._default_limits
            ):
                warm = self.warm.take(image.name)
            if warm is None and self._occupied() >= self.max_sandboxes:
                await self.warm.shrink()  # the pool gives way to a request it cannot serve
        if network == "egress" and self.network is not None and not self.network.egress:
            network = "none"  # this host gives sessions no way out (no uplink configured)
        sandbox = Sandbox(
            id=sandbox_id,
            image=image.name,
            runtime=image.runtime,
            status="creating",
            created_at=time.time(),
            workspace=workspace,
            session_type=session_type,
            limits=resolved.model_dump() if resolved else None,
            image_digest=image.digest,
            env=image.env or None,
            cwd=image.working_dir,
        )
        self._sandboxes[sandbox_id] = sandbox
        self._save(sandbox)
        scope, settled = trio.CancelScope(), trio.Event()
        self._creating[sandbox_id] = (scope, settled)
        try:
            with scope, trio.fail_after(self.start_timeout):
                if warm is not None:
                    await self._adopt(sandbox, warm, network, egress_allow)
                    warm = None
                    return self._started(sandbox)
                spec = await self._provide(sandbox, image, network, egress_allow, resolved)
                if fork_from is not None:
                    async with self._lifecycle[fork_from]:
                        await self.runtime.fork(fork_from, spec)
                else:
                    await self.runtime.create(spec)
                    await self.runtime.start(sandbox_id)
                    if session_type == "browser" and self.browsers is not None:
                        await self.browsers.launch(
                            sandbox_id, on_workspace=workspace is not None, on_exit=self._browser_exited
                        )
            if scope.cancelled_caught:
                raise errors.Conflict(f"sandbox {sandbox_id} was destroyed while starting", code="destroyed")
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                if warm is not None:  # never adopted: still under its own id
                    await self._discard_warm(warm)
                await self._remove(sandbox_id)
            failure = self._start_failure(exc)
            if failure is not None:
                raise failure from None
            raise
        finally:
            del self._creating[sandbox_id]
            settled.set()
        return self._started(sandbox)

    def _started(self, sandbox: Sandbox) -> Sandbox:
        sandbox.status = "running"
        self._save(sandbox)
        return sandbox

    def _check_room(self) -> None:
        if len(self._sandboxes) + len(self._throwaways) >= self.max_sandboxes:
            raise errors.Unavailable("host is at capacity", code="no_capacity")

    def _occupied(self) -> int:
        """Sandboxes on this host: sessions, throwaways, and the warm pool's."""
        return len(self._sandboxes) + len(self._throwaways) + (len(self.warm) if self.warm is not None else 0)

    # -- the warm pool -----------------------------------------------------

    def keep_warm(self, images: list[str], size: int) -> WarmPool[Warm]:
        """A pool of ``size`` containers started ahead per image (built-in images of this host); run it."""
        kinds = []
        for name in images:
            image = self.images.resolve(name)
            if image.runtime != "lxc":
                raise ValueError(f"warm_pool.images: {name} is not a container image")
            kinds.append(image.name)
        self.warm = WarmPool(
            kinds,
            size,
            boot=self._boot_warm,
            discard=self._discard_warm,
            room=lambda: self.max_sandboxes - self._occupied(),
        )
        return self.warm

    async def _boot_warm(self, image_name: str) -> Warm:
        """Start a container with nothing of a tenant's: default limits, a network slot granting nothing."""
        image = self.images.resolve(image_name)
        warm = Warm(f"warm-{uuid.uuid4().hex[:12]}", None)
        try:
            if self.network is not None:
                warm = Warm(warm.id, await self.network.acquire(warm.id, "none", None))
            spec = SandboxSpec(
                id=warm.id,
                image=image.name,
                rootfs=image.rootfs,
                layers=image.layers,
                netns=warm.lease.slot.netns_path if warm.lease is not None else None,
                guest_network=_guest_network(warm.lease) if warm.lease is not None else None,
                limits=self._default_limits,
            )
            with trio.fail_after(self.start_timeout):
                await self.runtime.create(spec)
                await self.runtime.start(warm.id)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._discard_warm(warm)
            raise
        return warm

    async def _discard_warm(self, warm: Warm) -> None:
        await self.runtime.destroy(warm.id)
        if self.network is not None:
            await self.network.release(warm.id)

    async def _adopt(
        self, sandbox: Sandbox, warm: Warm, network: NetworkMode, egress_allow: list[EgressRule] | None
    ) -> None:
        """Make the started container ``warm`` the sandbox: its id, then its network policy."""
        await self.runtime.adopt(warm.id, sandbox.id)
        if warm.lease is not None and self.network is not None:
            lease = await self.network.transfer(warm.id, sandbox.id, network, egress_allow)
            sandbox.network = lease.to_json()
            self._save(sandbox)

    def _start_failure(self, exc: BaseException) -> errors.ApiError | None:
        """What to tell a client about a start that failed with ``exc``; None to let it through."""
        if isinstance(exc, trio.TooSlowError):
            return errors.Timeout(f"sandbox did not start within {self.start_timeout:g}s")
        if isinstance(exc, Unsupported):
            return errors.Conflict(str(exc), code="unsupported")
        if isinstance(exc, RuntimeFailure | FirewallError):
            return errors.Unavailable(f"sandbox failed to start: {exc}", code="start_failed")
        return None

    @asynccontextmanager
    async def throwaway(self, image_name: str, workspace: Path, egress_allow: list[EgressRule]) -> AsyncIterator[str]:
        """A sandbox for work the agent does on a tenant's behalf (a Git import); its id.

        It holds ``workspace`` (a host directory) at /workspace, runs with the
        host's default limits, and its network slot lets it reach only
        ``egress_allow``, under every other rule sessions have (never the
        host, another sandbox or a blocked network). It is no session: not in
        the book, so neither in the heartbeat nor reachable through the API,
        and never re-adopted (after a crash, ``recover`` removes its remains as
        an unknown sandbox's). It is destroyed when the block ends, however.
        """
        if self.network is None or not self.network.egress:
            raise errors.Unavailable(
                "this host gives sandboxes no way out (its network.uplink is not set)", code="no_egress"
            )
        if not egress_allow:
            raise ValueError("an empty allow-list would let the sandbox reach everything")
        self._check_room()
        try:
            image = self.images.resolve(image_name)
        except errors.InvalidInput as exc:  # the agent's own choice, not the client's
            raise errors.Unavailable(f"this host cannot run the sandbox: {exc.message}", code="no_image") from None
        limits = Limits().resolved(self.limits.default, self.limits.max) if self.limits else None
        sandbox_id = str(uuid.uuid4())
        self._throwaways.add(sandbox_id)
        try:
            try:
                with trio.fail_after(self.start_timeout):
                    lease = await self.network.acquire(sandbox_id, "egress", egress_allow)
                    spec = SandboxSpec(
                        id=sandbox_id,
                        image=image.name,
                        rootfs=image.rootfs,
                        workspace=workspace,
                        netns=lease.slot.netns_path,
                        guest_network=_guest_network(lease),
                        limits=limits,
                    )
                    await self.runtime.create(spec)
                    await self.runtime.start(sandbox_id)
            except BaseException as exc:
                failure = self._start_failure(exc)
                if failure is not None:
                    raise failure from None
                raise
            yield sandbox_id
        finally:
            with trio.CancelScope(shield=True):
                await self.runtime.destroy(sandbox_id)
                await self.network.release(sandbox_id)
            self._throwaways.discard(sandbox_id)

    async def _provide(
        self,
        sandbox: Sandbox,
        image: Image,
        network: NetworkMode,
        egress_allow: list[EgressRule] | None,
        limits: Limits | None,
    ) -> SandboxSpec:
        """Attach the workspace and lease the network the sandbox needs; its spec.

        A container gets its workspace mounted on the host and bound in; a
        VM gets the disk itself, which its guest mounts.
        """
        mount = device = None
        if sandbox.workspace is not None and self.disks is not None:
            if self.runtime.workspace_as_device(sandbox.image):
                device = await self.disks.attach_device(sandbox.workspace, sandbox.id, self._freezer(sandbox.id))
            else:
                mount = await self.disks.attach(sandbox.workspace, sandbox.id)
        netns = guest = None
        if self.network is not None:
            lease = await self.network.acquire(sandbox.id, network, egress_allow)
            sandbox.network = lease.to_json()
            self._save(sandbox)
            netns = lease.slot.netns_path
            guest = _guest_network(lease)
        return SandboxSpec(
            id=sandbox.id,
            image=sandbox.image,
            rootfs=image.rootfs,
            layers=image.layers,
            workspace=mount,
            workspace_disk=device,
            netns=netns,
            guest_network=guest,
            limits=limits,
        )

    def _freezer(self, sandbox_id: str) -> Callable[[], AbstractAsyncContextManager[None]]:
        """How a forced snapshot holds still the workspace ``sandbox_id`` has as a device."""

        @asynccontextmanager
        async def frozen() -> AsyncIterator[None]:
            async with self._still[sandbox_id]:
                sandbox = self._sandboxes.get(sandbox_id)
                if sandbox is None or sandbox.status == "paused":
                    yield  # nothing runs that could write
                    return
                async with self.runtime.frozen(sandbox_id, WORKSPACE_MOUNT):
                    yield

        return frozen

    async def _browser_exited(self, sandbox_id: str, reason: str) -> None:
        """A browser session whose Chromium died ends: it has nothing left to offer."""
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.status != "running":
            return  # a create still waiting for it fails by itself; a destroy is under way
        self.endings[sandbox_id] = reason
        while len(self.endings) > _ENDINGS_KEPT:
            self.endings.popitem(last=False)
        sandbox.status = "destroying"
        self._save(sandbox)
        await self._remove(sandbox_id, reason)  # its connections (CDP among them) end with the reason

    async def _remove(self, sandbox_id: str, reason: str = "the session was terminated") -> None:
        sandbox = self._sandboxes.get(sandbox_id)
        try:
            if self.connections is not None:
                await self.connections.end(sandbox_id, reason)
            if sandbox is not None and sandbox.session_type == "browser" and self.browsers is not None:
                await self.browsers.stop(sandbox_id)
            await self.runtime.destroy(sandbox_id)
            if self.disks is not None:
                await self.disks.detach(sandbox_id)
            if self.network is not None:
                await self.network.release(sandbox_id)
        finally:
            self._forget(sandbox_id)
            if self.connections is not None:
                self.connections.forget(sandbox_id)

    async def destroy(self, sandbox_id: str, *, force: bool = True) -> None:
        """Destroy; without ``force``, refused (409) while connections are open."""
        sandbox = self.get(sandbox_id)
        leases = self.connections.count(sandbox_id) if self.connections is not None else 0
        if leases and not force:
            raise errors.Conflict(
                f"session {sandbox_id} has {leases} active connection(s); pass force=true to terminate anyway",
                code="active_connections",
                details={"active_connection_leases": leases},
            )
        if sandbox_id in self._creating:
            # The create's own rollback removes everything; wait for it.
            scope, settled = self._creating[sandbox_id]
            scope.cancel()
            await settled.wait()
            return
        async with self._lifecycle[sandbox_id]:
            sandbox.status = "destroying"
            self._save(sandbox)
            await self._remove(sandbox_id)
        self._lifecycle.pop(sandbox_id, None)
        self._still.pop(sandbox_id, None)

    async def pause(self, sandbox_id: str, *, force: bool = False) -> Sandbox:
        """Save the sandbox whole to its host's disk and stop it; ``resume`` continues it.

        Its connections (terminals, streams, tunnels) cannot survive that:
        without ``force`` a pause is refused (409) while any is open; with
        it, they are ended first.
        """
        sandbox = self.get(sandbox_id)
        if self.connections is None or sandbox.status != "running":
            return await self._transition(sandbox_id, "running", "pausing", "paused", self.runtime.pause)
        leases = self.connections.count(sandbox_id)
        if leases and not force:
            raise errors.Conflict(
                f"session {sandbox_id} has {leases} active connection(s); pass force=true to pause anyway",
                code="active_connections",
                details={"active_connection_leases": leases},
            )
        await self.connections.end(sandbox_id, "the session was paused")
        try:
            return await self._transition(sandbox_id, "running", "pausing", "paused", self.runtime.pause)
        finally:
            self.connections.reopen(sandbox_id)  # a paused sandbox refuses them anyway; a resumed one takes them

    async def resume(self, sandbox_id: str) -> Sandbox:
        """Continue a paused sandbox; returns once it answers (exec-ready)."""
        return await self._transition(sandbox_id, "paused", "resuming", "running", self.runtime.resume)

    async def _transition(
        self, sandbox_id: str, before: str, during: str, after: str, step: Callable[[str], Awaitable[None]]
    ) -> Sandbox:
        """Run ``step`` under the sandbox's lock, moving ``before`` -> ``during`` -> ``after``.

        On failure the record goes back to ``before`` if the runtime left the
        sandbox as it was; if the sandbox is gone, so is the record.
        """
        sandbox = self.get(sandbox_id)
        async with self._lifecycle[sandbox_id], self._still[sandbox_id]:
            if sandbox.status != before:
                raise errors.Conflict(f"sandbox {sandbox_id} is {sandbox.status}, not {before}", code="wrong_state")
            sandbox.status = during
            self._save(sandbox)
            try:
                with trio.fail_after(self.start_timeout):
                    await step(sandbox_id)
            except SandboxGone as exc:
                await self._remove(sandbox_id)
                raise errors.Conflict(f"sandbox {sandbox_id} is gone: {exc}", code="sandbox_gone") from None
            except BaseException as exc:
                sandbox.status = before
                self._save(sandbox)
                if isinstance(exc, Unsupported):
                    raise errors.Conflict(str(exc), code="unsupported") from None
                if isinstance(exc, trio.TooSlowError):
                    raise errors.Timeout(f"sandbox did not become {after} within {self.start_timeout:g}s") from None
                if isinstance(exc, RuntimeFailure):
                    raise errors.Unavailable(
                        f"sandbox could not become {after}: {exc}", code=f"{during}_failed"
                    ) from None
                raise
            sandbox.status = after
            self._save(sandbox)
        return sandbox

    async def destroy_all(self) -> None:
        for sandbox_id in list(self._sandboxes):
            if sandbox_id in self._sandboxes:
                await self.destroy(sandbox_id)

    def get(self, sandbox_id: str) -> Sandbox:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            raise errors.NotFound(f"sandbox {sandbox_id} not found")
        return sandbox

    def running(self, sandbox_id: str) -> Sandbox:
        """The sandbox, if it runs: 404 if unknown, 409 if starting or going."""
        sandbox = self.get(sandbox_id)
        if sandbox.status != "running":
            raise errors.Conflict(f"sandbox {sandbox_id} is {sandbox.status}", code="session_not_running")
        return sandbox

    def sandboxes(self) -> list[Sandbox]:
        return list(self._sandboxes.values())

    async def exec(
        self,
        sandbox_id: str,
        argv: list[str],
        env: Mapping[str, str],
        cwd: str | None,
        timeout: float | None,
    ) -> ExecResult:
        return await collect(await self.spawn(sandbox_id, argv, env, cwd), timeout, self.output_limit)

    async def spawn(self, sandbox_id: str, argv: list[str], env: Mapping[str, str], cwd: str | None) -> Process:
        """Start a process in a running sandbox, with the sandbox's default environment."""
        sandbox = self.get(sandbox_id)
        if sandbox.status != "running":
            raise errors.Conflict(f"sandbox {sandbox_id} is {sandbox.status}")
        env, cwd = sandbox.process_defaults(env, cwd or (WORKSPACE_MOUNT if sandbox.workspace is not None else None))
        spec = ProcessSpec(argv=argv, env=env, cwd=cwd)
        try:
            process = await self.runtime.spawn(sandbox_id, spec)
        except SandboxGone:
            raise errors.Conflict(f"sandbox {sandbox_id} is not running") from None
        except Busy as exc:
            raise errors.TooManyRequests(str(exc), code="sandbox_busy") from None
        except RuntimeFailure as exc:
            raise errors.Unavailable(str(exc), code="exec_failed") from None
        return process


def _guest_network(lease: Lease) -> GuestNetwork:
    """eth0's configuration in the lease's slot."""
    slot = lease.slot
    return GuestNetwork(address=IPv4Interface(f"{slot.guest_ip}/{SLOT_PREFIXLEN}"), gateway=slot.host_ip)
