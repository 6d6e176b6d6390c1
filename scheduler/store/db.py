"""The scheduler's store: synchronous SQLAlchemy Core, called from threads.

SQLite by default (embedded mode, one machine), PostgreSQL by URL (a
cluster). Methods are plain blocking functions; async callers go through
``Store.run`` so the trio loop never waits on the database. Every query that
reads a user's resources takes the ``account_id`` that owns them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from importlib.resources import files
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
import trio
from alembic import command
from alembic.config import Config as AlembicConfig

from scheduler.core.session_states import ACTIVE, SessionEvent, SessionStatus, moves, target
from scheduler.quota_settings import Usage
from scheduler.session_json import session_summary
from scheduler.store.accounts import AccountQueries
from scheduler.store.audit import AuditQueries
from scheduler.store.schema import accounts, api_keys, hosts, memberships, sessions, users
from scheduler.store.webhooks import WebhookQueries

P = ParamSpec("P")
T = TypeVar("T")

Row = dict[str, Any]


def _now() -> float:
    return time.time()


def session_usage(row: Row) -> Usage:
    """What a new session counts against its account's quota."""
    return Usage(sessions=1, cpus=row.get("reserved_cpus") or 0.0, memory_mb=row.get("reserved_memory_mb") or 0)


class Store(AccountQueries, AuditQueries, WebhookQueries):
    def __init__(self, url: str, max_threads: int = 8) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self._limiter = trio.CapacityLimiter(max_threads)
        # Called (from any thread) after a commit that queued webhook deliveries.
        self.outbox_listeners: list[Callable[[], None]] = []
        # Checks an insert against its account's quota, first in the insert's
        # transaction (``scheduler.quotas.QuotaGuard``; the scheduler sets it).
        self.quota_guard: Callable[[sa.Connection, str, Usage], None] | None = None

    def guard_quota(self, conn: sa.Connection, account_id: str, adding: Usage) -> None:
        if self.quota_guard is not None:
            self.quota_guard(conn, account_id, adding)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call a blocking store method in a worker thread."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._limiter)

    def close(self) -> None:
        self.engine.dispose()

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(files("scheduler") / "migrations"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    # -- users, accounts, keys --------------------------------------------

    def ensure_user(self, email: str) -> tuple[Row, Row]:
        """The user with this email and their personal account, created if new."""
        with self.engine.begin() as conn:
            existing = conn.execute(sa.select(users).where(users.c.email == email)).mappings().first()
            if existing is None:
                now = _now()
                user: Row = {"id": str(uuid.uuid4()), "email": email, "created_at": now}
                account: Row = {"id": str(uuid.uuid4()), "name": email, "kind": "personal", "created_at": now}
                conn.execute(users.insert().values(**user))
                conn.execute(accounts.insert().values(**account))
                conn.execute(
                    memberships.insert().values(
                        account_id=account["id"], user_id=user["id"], role="owner", created_at=now
                    )
                )
                return user, account
            personal = (
                conn.execute(
                    sa.select(accounts)
                    .join(memberships, memberships.c.account_id == accounts.c.id)
                    .where(memberships.c.user_id == existing["id"], accounts.c.kind == "personal")
                )
                .mappings()
                .one()
            )
            return dict(existing), dict(personal)

    def insert_api_key(
        self,
        *,
        account_id: str,
        user_id: str | None,
        name: str,
        prefix: str,
        secret_hash: str,
        scopes: list[str] | None,
        service_account_id: str | None = None,
        created_by: str | None = None,
    ) -> Row:
        row = {
            "id": str(uuid.uuid4()),
            "account_id": account_id,
            "user_id": user_id,
            "name": name,
            "prefix": prefix,
            "secret_hash": secret_hash,
            "scopes": scopes,
            "created_at": _now(),
            "service_account_id": service_account_id,
            "created_by": created_by,
            "last_used_at": None,
            "revoked_at": None,
        }
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(**row))
        return row

    def api_key_by_prefix(self, prefix: str) -> Row | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).mappings().first()
        return dict(row) if row else None

    def touch_api_key(self, key_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=_now()))

    # -- hosts ------------------------------------------------------------

    def upsert_host(self, info: Row) -> None:
        now = _now()
        values = {
            "url": info["url"],
            "session_types": info["session_types"],
            "images": info["images"],
            "max_sandboxes": info["capacity"]["max_sandboxes"],
            "cpus": info["capacity"]["cpus"],
            "memory_mb": info["capacity"]["memory_mb"],
            "egress": info.get("egress", False),
            "limits": info.get("limits"),
            "pulls_images": info.get("pulls_images", False),
            "registry_images": info.get("registry_images") or [],
            "last_heartbeat": now,
        }
        with self.engine.begin() as conn:
            updated = conn.execute(hosts.update().where(hosts.c.id == info["host_id"]).values(**values))
            if updated.rowcount == 0:
                conn.execute(hosts.insert().values(id=info["host_id"], registered_at=now, **values))

    def hosts_with_load(self) -> list[Row]:
        """Every host with ``active``: its sessions that are creating, running or paused."""
        active = (
            sa.select(sessions.c.host_id, sa.func.count().label("active"))
            .where(sessions.c.status.in_(ACTIVE))
            .group_by(sessions.c.host_id)
            .subquery()
        )
        query = sa.select(hosts, sa.func.coalesce(active.c.active, 0).label("active")).outerjoin(
            active, active.c.host_id == hosts.c.id
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def host(self, host_id: str) -> Row | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(hosts).where(hosts.c.id == host_id)).mappings().first()
        return dict(row) if row else None

    # -- sessions ---------------------------------------------------------

    def insert_session(self, row: Row) -> None:
        with self.engine.begin() as conn:
            self.guard_quota(conn, row["account_id"], session_usage(row))
            conn.execute(sessions.insert().values(**row))

    def delete_session(self, session_id: str) -> None:
        """Remove a create that failed; one a caller terminated meanwhile stays, terminated."""
        with self.engine.begin() as conn:
            conn.execute(
                sessions.delete().where(sessions.c.id == session_id, sessions.c.status != SessionStatus.TERMINATED)
            )

    def session(self, account_id: str, session_id: str) -> Row | None:
        query = sa.select(sessions).where(sessions.c.id == session_id, sessions.c.account_id == account_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def session_any_account(self, session_id: str) -> Row | None:
        """For the control plane's own bookkeeping only, never for a caller."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sessions).where(sessions.c.id == session_id)).mappings().first()
        return dict(row) if row else None

    def list_sessions(
        self,
        account_id: str,
        *,
        status: str | None,
        limit: int,
        after: tuple[float, str] | None,
    ) -> list[Row]:
        """Newest first; ``after`` is the (created_at, id) of the last row seen."""
        query = sa.select(sessions).where(sessions.c.account_id == account_id)
        if status is not None:
            query = query.where(sessions.c.status == status)
        if after is not None:
            created_at, session_id = after
            query = query.where(
                sa.or_(
                    sessions.c.created_at < created_at,
                    sa.and_(sessions.c.created_at == created_at, sessions.c.id < session_id),
                )
            )
        query = query.order_by(sessions.c.created_at.desc(), sessions.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def transition(self, session_id: str, event: SessionEvent, **values: Any) -> bool:
        """Apply ``event`` (and ``values``) to a session only if its status allows it.

        The guard makes racing writers (a create finishing while a delete
        runs, the reconciler) safe: exactly one of them wins.
        """
        return self._update_if(session_id, moves(event), {"status": target(event), **values})

    def _update_if(self, session_id: str, statuses: Iterable[str], values: Row) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                sessions.update()
                .where(sessions.c.id == session_id, sessions.c.status.in_(tuple(statuses)))
                .values(**values)
            )
        return result.rowcount == 1

    def terminate(self, session_id: str, reason: str) -> bool:
        """Terminate, and queue ``session.terminated`` in the same transaction."""
        values = {
            "status_reason": reason,
            "terminated_at": _now(),
            "active_connection_leases": 0,  # its connections end with it
        }
        return self._transition_with_event(session_id, SessionEvent.ENDED, values, "session.terminated")

    def mark_running(self, session_id: str, **granted: Any) -> bool:
        """A created session is up, with what its host granted: queue ``session.created`` in one transaction."""
        values = {"started_at": _now(), **granted}
        return self._transition_with_event(session_id, SessionEvent.STARTED, values, "session.created")

    def _transition_with_event(self, session_id: str, event: SessionEvent, values: Row, event_type: str) -> bool:
        with self.engine.begin() as conn:
            won = conn.execute(
                sessions.update()
                .where(sessions.c.id == session_id, sessions.c.status.in_(moves(event)))
                .values(status=target(event), **values)
            )
            if won.rowcount != 1:
                return False
            row = conn.execute(sa.select(sessions).where(sessions.c.id == session_id)).mappings().one()
            queued = self.enqueue_event_in(conn, row["account_id"], event_type, {"session": session_summary(dict(row))})
        if queued:
            self.notify_outbox()
        return True

    def active_sessions_on_host(self, host_id: str) -> list[Row]:
        query = sa.select(sessions).where(sessions.c.host_id == host_id, sessions.c.status.in_(ACTIVE))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def sessions_by_ids(self, ids: Iterable[str]) -> dict[str, Row]:
        ids = list(ids)
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(sessions).where(sessions.c.id.in_(ids))).mappings()
            return {r["id"]: dict(r) for r in rows}

    def overdue_creates(self, now: float) -> list[Row]:
        query = sa.select(sessions).where(sessions.c.status == SessionStatus.CREATING, sessions.c.create_deadline < now)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # -- session lifetime and activity (session endpoints) -----------------

    def record_activity(self, session_id: str, at: float) -> None:
        """Move ``last_activity_at`` forward (never back)."""
        with self.engine.begin() as conn:
            conn.execute(
                sessions.update()
                .where(
                    sessions.c.id == session_id,
                    sa.or_(sessions.c.last_activity_at.is_(None), sessions.c.last_activity_at < at),
                )
                .values(last_activity_at=at)
            )

    def record_connections(self, session_id: str, leases: int, last_activity_at: float | None) -> None:
        """What a host reported: open leases, and the last activity it saw."""
        with self.engine.begin() as conn:
            # Not on an ended session: a heartbeat read before a terminate must not revive its count.
            live = sessions.c.status.in_(ACTIVE)
            update = sessions.update().where(sessions.c.id == session_id, live)
            conn.execute(update.values(active_connection_leases=leases))
        if last_activity_at is not None:
            self.record_activity(session_id, last_activity_at)

    def set_lifetime(self, session_id: str, values: dict[str, Any]) -> bool:
        """Change timeouts or the deadline of a session that has not ended."""
        return self._update_if(session_id, ACTIVE, values)

    def expired_sessions(self, now: float) -> list[Row]:
        """Sessions past their maximum lifetime."""
        query = sa.select(sessions).where(
            sessions.c.status.in_(ACTIVE), sessions.c.expires_at.is_not(None), sessions.c.expires_at < now
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def idle_candidates(self, now: float) -> list[Row]:
        """Running sessions without connections whose idle timeout may have passed (checked by the caller)."""
        last = sa.func.coalesce(sessions.c.last_activity_at, sessions.c.started_at)
        query = sa.select(sessions).where(
            sessions.c.status == SessionStatus.RUNNING,
            sessions.c.active_connection_leases == 0,
            sessions.c.idle_timeout_ms.is_not(None),
            last + sessions.c.idle_timeout_ms / 1000.0 < now,
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def active_sessions_on_silent_hosts(self, silent_since: float) -> list[Row]:
        query = (
            sa.select(sessions)
            .join(hosts, hosts.c.id == sessions.c.host_id)
            .where(sessions.c.status.in_(ACTIVE), hosts.c.last_heartbeat < silent_since)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]


def _make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: no fsync per commit, still consistent after a
            # crash; only a power loss can drop the last transactions.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_pre_ping=True, json_serializer=json.dumps)
