"""Sessions: create, terminate, exec, and reconcile them with what hosts report.

Provisioning runs in the service's own nursery, not in the request's task,
so a client that hangs up cannot cancel a create half-way; the request only
waits for the outcome. Status changes go through guarded transitions, so a
create finishing while a delete (or the reconciler) runs resolves to one
winner, and the loser cleans up what it made.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import trio

from chaser.wire import errors
from chaser.wire.agent_api import CreateSandbox, ExecRequest, RegistryLogin
from chaser.wire.isolation import EgressRule, Limits
from scheduler import workspace_lookup
from scheduler.agents import AgentClient
from scheduler.config import SchedulerConfig
from scheduler.core.session_states import SessionEvent
from scheduler.detached import run_detached
from scheduler.placement import HostLoad, candidates
from scheduler.quotas import reservation
from scheduler.registry_credentials import RegistryLogins
from scheduler.session_json import session_summary
from scheduler.store import Row, Store
from scheduler.store import workspaces as workspace_db
from scheduler.timefmt import rfc3339

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "default"
# What browser sessions boot (they take no image of their own): Chromium's.
BROWSER_IMAGE = "browser"
# How long a host may take to answer an exec beyond the command's own timeout.
_EXEC_SLACK = 30.0
# How long a session read waits for its host's live lease count.
_LIVE_LEASES_TIMEOUT = 2.0


class SessionService:
    def __init__(self, store: Store, agents: AgentClient, config: SchedulerConfig, public_url: str) -> None:
        self.store = store
        self.agents = agents
        self.config = config
        self.public_url = public_url.rstrip("/")
        self.registry_logins = RegistryLogins(store, config)
        self._nursery: trio.Nursery | None = None
        self._up_since = time.time()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the background work (provisioning, cleanup, the reconcile sweep)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sweep_forever)
            task_status.started()

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None, "SessionService.run has not started"
        return self._nursery

    # -- presentation -----------------------------------------------------

    def to_json(self, row: Row) -> dict[str, Any]:
        public = urlsplit(self.public_url)
        port = f":{public.port}" if public.port else ""
        return {
            **session_summary(row),
            "network": row["network"],
            "egress_allow": row["egress_allow"],
            "limits": row["limits"],
            "forked_from": row.get("forked_from"),
            "active_connection_leases": row.get("active_connection_leases") or 0,
            "timeout_ms": row.get("timeout_ms"),
            "idle_timeout_ms": row.get("idle_timeout_ms"),
            "expires_at": rfc3339(row.get("expires_at")),
            "last_activity_at": rfc3339(row.get("last_activity_at")),
            "endpoints": {
                "subdomain": f"{public.scheme}://{row['id']}.{self.config.session_domain}{port}/",
                "path": f"{self.public_url}/s/{row['id']}/",
            },
        }

    # -- queries ----------------------------------------------------------

    async def get(self, account_id: str, session_id: str) -> Row:
        row = await self.store.run(self.store.session, account_id, session_id)
        if row is None:
            raise errors.NotFound(f"session {session_id} not found", code="session_not_found")
        return row

    async def with_live_leases(self, row: Row) -> Row:
        """``row`` with the lease count its host has right now (heartbeats lag a little)."""
        if row["status"] != "running" or row["host_id"] is None:
            return row
        host = await self.store.run(self.store.host, row["host_id"])
        if host is None:
            return row
        try:
            sandbox = await self.agents.sandbox(host["url"], row["id"], timeout=_LIVE_LEASES_TIMEOUT)
        except errors.ApiError:
            return row  # the host is busy or gone: the last heartbeat's count stands
        return {**row, "active_connection_leases": sandbox.active_connection_leases or 0}

    async def _hosts(self) -> list[HostLoad]:
        now = time.time()
        return [
            HostLoad(
                id=h["id"],
                url=h["url"],
                session_types=frozenset(h["session_types"]),
                images=frozenset(h["images"]),
                max_sandboxes=h["max_sandboxes"],
                active=h["active"],
                healthy=h["last_heartbeat"] > now - self.config.heartbeat_timeout,
                egress=h["egress"],
                max_limits=Limits(**h["limits"]["max"]) if h["limits"] else None,
                pulls_images=bool(h.get("pulls_images")),
                registry_images=frozenset(h.get("registry_images") or ()),
            )
            for h in await self.store.run(self.store.hosts_with_load)
        ]

    # -- create -----------------------------------------------------------

    async def create(
        self,
        account_id: str,
        *,
        session_type: str,
        ephemeral: bool,
        workspace: str | None,
        image: str | None,
        session_id: str | None = None,
        network: str | None = None,
        egress_allow: list[EgressRule] | None = None,
        limits: Limits | None = None,
        timeout_ms: int | None = None,
        idle_timeout_ms: int | None = None,
    ) -> Row:
        """Place and provision a session; ``session_id`` lets a caller record the id before it exists.

        ``network`` None means egress where the host gives it.
        """
        timeout_ms = timeout_ms or self.config.default_session_timeout_ms
        idle_timeout_ms = idle_timeout_ms or self.config.default_idle_timeout_ms
        self.check_lifetime(timeout_ms)
        attached: Row | None = None
        if workspace is not None:
            attached = await workspace_lookup.for_session(self.store, account_id, workspace, session_type)
            image = attached["image"]
        image = (image or DEFAULT_IMAGE) if session_type == "sandbox" else BROWSER_IMAGE
        hosts = [h for h in await self._hosts() if h.healthy]
        if attached is not None:  # a workspace's sessions run where its disk is
            hosts = [h for h in hosts if h.id == attached["host_id"]]
            if not hosts:
                raise errors.Unavailable(
                    f"the host holding workspace {attached['name']!r} is not available", code="workspace_host_down"
                )
        able = [h for h in hosts if session_type in h.session_types]
        if not able:
            raise errors.Unavailable(f"no host can run {session_type} sessions", code="no_host")
        if image is not None and not any(h.runs(image) for h in able):
            known = sorted(set().union(*(h.images for h in able)))
            pulls = " or an image reference (name[:tag][@digest])" if any(h.pulls_images for h in able) else ""
            raise errors.InvalidInput(
                f"unknown image {image!r}; available: {', '.join(known) or 'none'}{pulls}", code="unknown_image"
            )
        needs_egress = network == "egress" or bool(egress_allow)
        _check_isolation(able, needs_egress, limits)
        options = candidates(hosts, session_type, image, needs_egress=needs_egress, limits=limits)
        if not options:
            raise errors.Unavailable(f"no host has room for another {session_type} session", code="no_capacity")
        now = time.time()
        chosen = await self.store.run(self.store.host, options[0].id)
        cpus, memory_mb = reservation(limits.model_dump() if limits else None, chosen["limits"] if chosen else None)
        row: Row = {
            "id": session_id or str(uuid.uuid4()),
            "account_id": account_id,
            "session_type": session_type,
            "ephemeral": ephemeral,
            "workspace_id": attached["id"] if attached is not None else None,
            "image": image,
            "host_id": options[0].id,
            "status": "creating",
            "status_reason": None,
            "created_at": now,
            "create_deadline": now + self.config.create_timeout,
            "started_at": None,
            "terminated_at": None,
            "network": network,
            "egress_allow": [r.model_dump() for r in egress_allow] if egress_allow else None,
            "limits": limits.model_dump() if limits else None,
            "timeout_ms": timeout_ms,
            "idle_timeout_ms": idle_timeout_ms,
            "expires_at": now + timeout_ms / 1000,
            "last_activity_at": now,
            "active_connection_leases": 0,
            "reserved_cpus": cpus,
            "reserved_memory_mb": memory_mb,
        }
        if attached is None:
            await self.store.run(self.store.insert_session, row)
        else:
            await self.store.run(workspace_db.attach_session, self.store, row, attached["name"])
        return await self.provision(row, options)

    async def provision(self, row: Row, options: list[HostLoad]) -> Row:
        """Start the inserted session on the first of ``options`` that can."""
        await run_detached(self.nursery, lambda: self._provision(row, options))
        return await self.get(row["account_id"], row["id"])

    async def _provision(self, row: Row, options: list[HostLoad]) -> None:
        session_id = row["id"]
        ctx = {"session_id": session_id, "account_id": row["account_id"]}
        host: HostLoad | None = None
        try:
            # The account's login for the image's registry, opened only now, for this create.
            login = (
                None
                if row["image"] in options[0].images
                else await self.registry_logins.login_for(row["account_id"], row["image"])
            )
            for host in options:
                if host.id != row["host_id"]:
                    await self.store.run(self.store.transition, session_id, SessionEvent.MOVED, host_id=host.id)
                remaining = row["create_deadline"] - time.time()
                try:
                    with trio.fail_after(max(remaining, 0)):
                        request = CreateSandbox(
                            id=session_id,
                            image=row["image"],
                            network=row["network"] or "egress",
                            egress_allow=row["egress_allow"],
                            limits=Limits.model_validate(row["limits"] or {}),
                            workspace=row["workspace_id"],
                            fork_from=row.get("forked_from"),
                            session_type=row["session_type"],
                            account=row["account_id"],
                            registry_login=RegistryLogin.model_validate(login.to_agent())
                            if login is not None
                            else None,
                        )
                        sandbox = await self.agents.create_sandbox(host.url, request, timeout=remaining)
                except errors.Unavailable as exc:
                    if exc.code == "no_capacity":
                        continue  # the host filled up since its heartbeat: next one
                    raise
                break
            else:
                raise errors.Unavailable("every host is at capacity", code="no_capacity")
        except trio.TooSlowError:
            reason = f"did not start within {self.config.create_timeout:g}s"
            await self.store.run(self.store.terminate, session_id, reason)
            await self._destroy_quietly(host, session_id)
            log.warning("session create timed out", extra=ctx)
            raise errors.Timeout(f"session {session_id} {reason}", code="create_timeout") from None
        except errors.ApiError as exc:
            # Nothing of a failed create survives: the host rolled back its
            # part (or is told to), and the row goes.
            await self._destroy_quietly(host, session_id)
            await self.store.run(self.store.delete_session, session_id)
            log.warning("session create failed: %s", exc.message, extra=ctx)
            raise
        else:
            granted = sandbox.network or {}
            started = await self.store.run(
                self.store.mark_running,
                session_id,
                network=granted.get("mode", "none"),
                limits=sandbox.limits,
                image_digest=sandbox.image_digest,
            )
            if not started:  # terminated while we were creating it
                await self._destroy_quietly(host, session_id)

    async def _destroy_quietly(self, host: HostLoad | Row | None, session_id: str) -> None:
        """Best-effort destroy; the reconciler removes whatever this misses."""
        if host is None:
            return
        url = host.url if isinstance(host, HostLoad) else host["url"]
        with trio.CancelScope(shield=True):
            try:
                await self.agents.destroy_sandbox(url, session_id)
            except errors.ApiError as exc:
                log.warning("destroy failed, left to the reconciler: %s", exc.message, extra={"session_id": session_id})

    # -- terminate --------------------------------------------------------

    async def terminate(self, account_id: str, session_id: str, *, force: bool, reason: str) -> Row:
        """End a session; without ``force``, refused (409) while it has open connections.

        The host decides about connections, atomically: it destroys the
        sandbox only if none is open, and then refuses new ones.
        """
        row = await self.get(account_id, session_id)
        if row["status"] == "terminated":
            return row
        if not force and row["status"] == "running" and row["host_id"] is not None:
            host = await self.store.run(self.store.host, row["host_id"])
            if host is not None:
                with trio.CancelScope(shield=True):
                    await self.agents.destroy_sandbox(host["url"], row["id"], force=False)
        await self._terminate_row(row, reason)
        return await self.get(account_id, session_id)

    def check_lifetime(self, timeout_ms: int) -> None:
        if timeout_ms > self.config.max_session_timeout_ms:
            raise errors.InvalidInput(
                f"timeout_ms may be at most {self.config.max_session_timeout_ms}", code="invalid_request"
            )

    async def set_lifetime(
        self, account_id: str, session_id: str, *, timeout_ms: int | None, idle_timeout_ms: int | None
    ) -> Row:
        """Extend (or shorten) a session: a new ``timeout_ms`` counts from now; the deadline is stored."""
        row = await self.get(account_id, session_id)
        values: dict[str, Any] = {}
        if timeout_ms is not None:
            self.check_lifetime(timeout_ms)
            values.update(timeout_ms=timeout_ms, expires_at=time.time() + timeout_ms / 1000)
        if idle_timeout_ms is not None:
            values["idle_timeout_ms"] = idle_timeout_ms
        if values and not await self.store.run(self.store.set_lifetime, row["id"], values):
            raise errors.Conflict(f"session {session_id} has ended", code="session_not_running")
        return await self.get(account_id, session_id)

    async def _terminate_row(self, row: Row, reason: str) -> None:
        with trio.CancelScope(shield=True):
            await self.store.run(self.store.terminate, row["id"], reason)
            if row["host_id"] is not None:
                await self._destroy_quietly(await self.store.run(self.store.host, row["host_id"]), row["id"])

    # -- exec -------------------------------------------------------------

    async def exec_in(self, row: Row, request: ExecRequest, timeout: float) -> dict[str, Any]:
        if row["status"] != "running":
            raise errors.Conflict(f"session {row['id']} is {row['status']}", code="session_not_running")
        host = await self.store.run(self.store.host, row["host_id"])
        if host is None:
            raise errors.Unavailable("the session's host is gone", code="host_gone")
        result = await self.agents.exec(host["url"], row["id"], request, timeout + _EXEC_SLACK)
        return result.model_dump()

    async def exec_ephemeral(
        self,
        account_id: str,
        image: str | None,
        request: ExecRequest,
        timeout: float,
        *,
        network: str | None = None,
        egress_allow: list[EgressRule] | None = None,
        limits: Limits | None = None,
    ) -> dict[str, Any]:
        """Provision, run, and always clean up, whatever ends the call."""
        row = await self.create(
            account_id,
            session_type="sandbox",
            ephemeral=True,
            workspace=None,
            image=image,
            network=network,
            egress_allow=egress_allow,
            limits=limits,
        )
        try:
            result = await self.exec_in(row, request, timeout)
        finally:
            await self._terminate_row(row, "one-shot exec finished")
        return {**result, "session_id": row["id"]}

    # -- reconciliation ---------------------------------------------------

    async def on_heartbeat(self, info: dict[str, Any]) -> None:
        """Record the host and repair sessions from what really runs there."""
        await self.store.run(self.store.upsert_host, info)
        host_id = info["host_id"]
        # Paused sandboxes are present too: only their processes are stopped.
        running = set(info["sandboxes"]) | set(info.get("paused", ()))
        endings = info.get("endings") or {}
        settled_before = time.time() - self.config.heartbeat_timeout
        for row in await self.store.run(self.store.active_sessions_on_host, host_id):
            if (
                row["status"] in ("running", "paused")
                and row["id"] not in running
                and row["started_at"] < settled_before
            ):
                reason = endings.get(row["id"], "the sandbox stopped on its host")
                await self.store.run(self.store.terminate, row["id"], reason)
                log.warning("session lost on its host", extra={"session_id": row["id"], "host_id": host_id})
        activity = info.get("activity") or {}
        now = time.time()
        for row in await self.store.run(self.store.active_sessions_on_host, host_id):
            seen = activity.get(row["id"])
            if seen is None:
                continue
            last = None if seen["idle_for"] is None else now - seen["idle_for"]
            changed = seen["leases"] != row["active_connection_leases"]
            if changed or (last is not None and last > (row["last_activity_at"] or 0) + 1):
                await self.store.run(self.store.record_connections, row["id"], seen["leases"], last)
        known = await self.store.run(self.store.sessions_by_ids, running)
        for sandbox_id in running:
            owner = known.get(sandbox_id)
            if owner is None or owner["status"] == "terminated" or owner["host_id"] != host_id:
                log.info("destroying orphan sandbox", extra={"session_id": sandbox_id, "host_id": host_id})
                self.nursery.start_soon(self._destroy_quietly, {"url": info["url"]}, sandbox_id)

    async def sweep(self) -> None:
        """End what can no longer finish: overdue creates, sessions of silent hosts."""
        now = time.time()
        for row in await self.store.run(self.store.overdue_creates, now):
            await self._terminate_row(row, f"did not start within {self.config.create_timeout:g}s")
        silent_since = now - 2 * self.config.heartbeat_timeout
        if silent_since < self._up_since:
            return  # too soon after our own start to tell a silent host from one we were not there to hear
        for row in await self.store.run(self.store.active_sessions_on_silent_hosts, silent_since):
            await self.store.run(self.store.terminate, row["id"], "its host stopped responding")
        await self._expire(now)

    async def _expire(self, now: float) -> None:
        """End sessions past their lifetime, and idle ones.

        The rule: a session past ``expires_at`` ends, connections or not
        (they are closed). A session is idle when it has no open connection
        and nothing happened on it (a request to its endpoints, an exec,
        traffic on a connection) for ``idle_timeout_ms``; then it ends. An
        open connection keeps a session from idling out; one that carries
        only keepalive pings is closed by its host after the lease idle
        timeout, after which the session can idle out.
        """
        for row in await self.store.run(self.store.expired_sessions, now):
            seconds = (row["timeout_ms"] or 0) / 1000
            await self._terminate_row(row, f"reached its maximum lifetime of {seconds:g}s (timeout_ms)")
            log.info("session expired", extra={"session_id": row["id"]})
        for row in await self.store.run(self.store.idle_candidates, now):
            seconds = (row["idle_timeout_ms"] or 0) / 1000
            await self._terminate_row(row, f"idle for {seconds:g}s with no connection (idle_timeout_ms)")
            log.info("session idled out", extra={"session_id": row["id"]})

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("reconcile sweep failed")
            await trio.sleep(self.config.reconcile_interval)


def _check_isolation(able: list[HostLoad], needs_egress: bool, limits: Limits | None) -> None:
    """Refuse what no host able to run the session could ever give it."""
    if needs_egress and not any(h.egress for h in able):
        raise errors.Unavailable(
            'no host gives sessions network egress; ask for network: "none", or configure an uplink on a host',
            code="no_egress",
        )
    if limits is not None and not any(h.fits(limits) for h in able):
        maxima = [h.max_limits for h in able if h.max_limits is not None]
        raise errors.InvalidInput("; ".join(limits.exceeding(maxima[0])), code="limit_exceeded")
