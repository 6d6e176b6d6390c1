"""Pause, resume and fork sessions: memory snapshots kept on the session's host.

``POST /v1/sessions/{id}/pause`` saves a running session whole (its VM's
memory and devices, and its disk) on its host and stops it: status
``paused``, processes and files intact. ``POST /v1/sessions/{id}/resume``
continues it; the answer comes once it is exec-ready. ``POST
/v1/sessions/{id}/fork`` creates a new ephemeral session from a paused one's
snapshot, on the same host, with its own copy-on-write disk: the two then
diverge. Only VM sessions can do this; others answer 409 ``unsupported``.
A session's open connections (terminals, streams, tunnels) cannot survive
a pause: it is refused (409 ``active_connections``) while any is open,
unless ``force=true`` ends them. A paused session never idles out (its
maximum lifetime still runs); idle time counts again from the resume.

The host's work runs in the service's nursery, not the request's task, so a
client that hangs up cannot leave the session half-paused: the request only
waits for the outcome. Status changes are guarded transitions, as for create.
"""

from __future__ import annotations

import time
import uuid

from quart import Response
from quart_trio import QuartTrio

from chaser.wire import errors
from scheduler.access import audit_resource, principal, requires
from scheduler.core.session_states import SessionEvent, SessionStatus, allows
from scheduler.detached import run_detached
from scheduler.models import ForceQuery, session_id_of
from scheduler.placement import HostLoad
from scheduler.sessions import SessionService
from scheduler.store import Row
from serving.quart_json import json_response, parse_query


class SessionLifecycle:
    def __init__(self, service: SessionService) -> None:
        self.service = service
        self.store = service.store

    async def _host_url(self, row: Row) -> str:
        host = await self.store.run(self.store.host, row["host_id"])
        if host is None:
            raise errors.Unavailable("the session's host is gone", code="host_gone")
        url: str = host["url"]
        return url

    async def pause(self, account_id: str, session_id: str, *, force: bool) -> Row:
        """Pause; its open connections refuse it (409) unless ``force`` ends them."""
        row = await self.service.get(account_id, session_id)
        if row["status"] == SessionStatus.PAUSED:
            return row
        if not allows(row["status"], SessionEvent.PAUSED):
            raise errors.Conflict(f"session {session_id} is {row['status']}", code="session_not_running")
        url = await self._host_url(row)

        async def work() -> None:
            await self.service.agents.pause_sandbox(url, session_id, self.service.config.create_timeout, force=force)
            await self.store.run(self.store.transition, session_id, SessionEvent.PAUSED, active_connection_leases=0)

        await run_detached(self.service.nursery, work)
        return await self.service.get(account_id, session_id)

    async def resume(self, account_id: str, session_id: str) -> Row:
        row = await self.service.get(account_id, session_id)
        if row["status"] == SessionStatus.RUNNING:
            return row
        if not allows(row["status"], SessionEvent.RESUMED):
            raise errors.Conflict(f"session {session_id} is {row['status']}", code="session_not_paused")
        url = await self._host_url(row)

        async def work() -> None:
            await self.service.agents.resume_sandbox(url, session_id, self.service.config.create_timeout)
            # Idle time starts again from the resume (a paused session never idles out).
            await self.store.run(self.store.transition, session_id, SessionEvent.RESUMED, last_activity_at=time.time())

        await run_detached(self.service.nursery, work)
        return await self.service.get(account_id, session_id)

    async def fork(self, account_id: str, session_id: str) -> Row:
        """A new session from the paused one's snapshot, on its host.

        It keeps the source's image, limits (its memory is the snapshot's)
        and network policy, but gets its own address, disk and identity. A
        session holding a workspace cannot be forked: the disk has one holder.
        """
        source = await self.service.get(account_id, session_id)
        if source["status"] != SessionStatus.PAUSED:
            raise errors.Conflict(
                f"session {session_id} is {source['status']}; pause it before forking", code="session_not_paused"
            )
        if source["workspace_id"] is not None:
            raise errors.Conflict(
                f"session {session_id} holds a workspace, which only one session at a time can have",
                code="fork_with_workspace",
            )
        host = await self.store.run(self.store.host, source["host_id"])
        if host is None:
            raise errors.Unavailable("the session's host is gone", code="host_gone")
        now = time.time()
        row: Row = {
            "id": str(uuid.uuid4()),
            "account_id": account_id,
            "session_type": source["session_type"],
            "ephemeral": True,
            "workspace_id": None,
            "image": source["image"],
            "host_id": host["id"],
            "status": SessionStatus.CREATING,
            "status_reason": None,
            "created_at": now,
            "create_deadline": now + self.service.config.create_timeout,
            "started_at": None,
            "terminated_at": None,
            "network": source["network"],
            "egress_allow": source["egress_allow"],
            "limits": source["limits"],
            "timeout_ms": source["timeout_ms"],
            "idle_timeout_ms": source["idle_timeout_ms"],
            "expires_at": now + source["timeout_ms"] / 1000 if source["timeout_ms"] else None,
            "last_activity_at": now,
            "active_connection_leases": 0,
            "forked_from": session_id,
            "reserved_cpus": source.get("reserved_cpus"),
            "reserved_memory_mb": source.get("reserved_memory_mb"),
        }
        target = HostLoad(
            id=host["id"],
            url=host["url"],
            session_types=frozenset(host["session_types"]),
            images=frozenset(host["images"]),
            max_sandboxes=host["max_sandboxes"],
            active=0,
            healthy=True,
        )
        await self.store.run(self.store.insert_session, row)
        return await self.service.provision(row, [target])


def register_lifecycle_routes(app: QuartTrio, lifecycle: SessionLifecycle) -> None:
    """Add the routes (registered by ``scheduler.api.create_app``)."""
    service = lifecycle.service

    @app.post("/v1/sessions/<raw_id>/pause")
    @requires("sessions.write", action="session.pause")
    async def pause_session(raw_id: str) -> Response:
        force = parse_query(ForceQuery).force in ("true", "1")
        row = await lifecycle.pause(principal().account_id, session_id_of(raw_id), force=force)
        return json_response(service.to_json(row))

    @app.post("/v1/sessions/<raw_id>/resume")
    @requires("sessions.write", action="session.resume")
    async def resume_session(raw_id: str) -> Response:
        row = await lifecycle.resume(principal().account_id, session_id_of(raw_id))
        return json_response(service.to_json(row))

    @app.post("/v1/sessions/<raw_id>/fork")
    @requires("sessions.write", action="session.fork")
    async def fork_session(raw_id: str) -> Response:
        row = await lifecycle.fork(principal().account_id, session_id_of(raw_id))
        audit_resource(row["id"])
        return json_response(service.to_json(row), status=201)
