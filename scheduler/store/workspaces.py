"""Store queries for workspaces, their snapshots and the hosts' storage pools.

Blocking functions over a ``Store``, called as
``await store.run(workspaces.find, store, account_id, selector)``. Every
query a caller's request reaches is scoped by ``account_id``.

Attaching a session and starting a delete both begin by updating the
workspace's row, which serializes them (a row lock in PostgreSQL, the write
lock in SQLite): whichever commits second sees the first. A partial unique
index on sessions backs the one-active-session rule in the database itself.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa

from chaser.wire import errors
from scheduler.core.session_states import ACTIVE
from scheduler.quota_settings import Usage
from scheduler.store.db import Row, Store, session_usage
from scheduler.store.schema import host_storage, hosts, sessions, workspace_snapshots, workspaces

_VISIBLE = workspaces.c.status != "deleting"


def _one(conn: sa.Connection, query: sa.Select[Any]) -> Row | None:
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def name_taken(name: str) -> errors.Conflict:
    return errors.Conflict(f"a workspace named {name!r} already exists", code="workspace_name_taken")


# -- workspaces -------------------------------------------------------------


def insert(store: Store, row: Row) -> None:
    try:
        with store.engine.begin() as conn:
            store.guard_quota(conn, row["account_id"], Usage(workspaces=1))
            conn.execute(workspaces.insert().values(**row))
    except sa.exc.IntegrityError:
        raise name_taken(row["name"]) from None


def find(store: Store, account_id: str, selector: str) -> Row | None:
    """The caller's workspace by name (case-insensitive, preferred) or by UUID."""
    mine = sa.select(workspaces).where(workspaces.c.account_id == account_id, _VISIBLE)
    with store.engine.connect() as conn:
        row = _one(conn, mine.where(workspaces.c.name_key == selector.lower()))
        if row is None and _is_uuid(selector):
            row = _one(conn, mine.where(workspaces.c.id == selector.lower()))
    return row


def get_any(store: Store, workspace_id: str) -> Row | None:
    """For the control plane's own bookkeeping only, never for a caller."""
    with store.engine.connect() as conn:
        return _one(conn, sa.select(workspaces).where(workspaces.c.id == workspace_id))


def list_for(store: Store, account_id: str, *, template: bool | None, limit: int, after: str | None) -> list[Row]:
    """By name; ``after`` is the lower-cased name of the last row seen."""
    query = sa.select(workspaces).where(workspaces.c.account_id == account_id, _VISIBLE)
    if template is not None:
        query = query.where(workspaces.c.is_template == template)
    if after is not None:
        query = query.where(workspaces.c.name_key > after)
    query = query.order_by(workspaces.c.name_key).limit(limit)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def holders(store: Store, workspace_ids: list[str]) -> dict[str, Row]:
    """The session creating or running on each of these workspaces, if any."""
    if not workspace_ids:
        return {}
    query = sa.select(sessions).where(sessions.c.workspace_id.in_(workspace_ids), sessions.c.status.in_(ACTIVE))
    with store.engine.connect() as conn:
        return {r["workspace_id"]: dict(r) for r in conn.execute(query).mappings()}


def holder(store: Store, workspace_id: str) -> Row | None:
    return holders(store, [workspace_id]).get(workspace_id)


def _holder_in(conn: sa.Connection, workspace_id: str) -> Row | None:
    query = sa.select(sessions).where(sessions.c.workspace_id == workspace_id, sessions.c.status.in_(ACTIVE))
    return _one(conn, query)


def in_use(name: str, session_id: str) -> errors.Conflict:
    return errors.Conflict(f"workspace {name!r} is in use by session {session_id}", code="workspace_in_use")


def attach_session(store: Store, session: Row, workspace_name: str) -> None:
    """Insert ``session`` on its workspace unless another session holds it (409 naming it)."""
    workspace_id = session["workspace_id"]
    try:
        with store.engine.begin() as conn:
            store.guard_quota(conn, session["account_id"], session_usage(session))
            claimed = conn.execute(
                workspaces.update()
                .where(workspaces.c.id == workspace_id, workspaces.c.status == "ready")
                .values(last_used_at=time.time())
            )
            if claimed.rowcount != 1:
                raise errors.Conflict(f"workspace {workspace_name!r} is not ready", code="workspace_not_ready")
            other = _holder_in(conn, workspace_id)
            if other is not None:
                raise in_use(workspace_name, other["id"])
            conn.execute(sessions.insert().values(**session))
    except sa.exc.IntegrityError:
        other = holder(store, workspace_id)
        raise in_use(workspace_name, other["id"] if other else "(just ended)") from None


def begin_delete(store: Store, workspace: Row, force: bool) -> Row | None:
    """Mark the workspace deleting (its name is free at once); the session to end, if any.

    Refused (409 naming the session) while one is attached, unless ``force``.
    """
    with store.engine.begin() as conn:
        marked = conn.execute(
            workspaces.update()
            .where(workspaces.c.id == workspace["id"], workspaces.c.status == "ready")
            .values(status="deleting", name_key=None, updated_at=time.time())
        )
        if marked.rowcount != 1:
            raise errors.Conflict(f"workspace {workspace['name']!r} is not ready", code="workspace_not_ready")
        attached = _holder_in(conn, workspace["id"])
        if attached is not None and not force:
            raise errors.Conflict(
                f"workspace {workspace['name']!r} is in use by session {attached['id']}; "
                "pass force=true to terminate it and delete the workspace",
                code="workspace_in_use",
            )
    return attached


def transition(store: Store, workspace_id: str, from_status: str, **values: Any) -> bool:
    with store.engine.begin() as conn:
        result = conn.execute(
            workspaces.update()
            .where(workspaces.c.id == workspace_id, workspaces.c.status == from_status)
            .values(updated_at=time.time(), **values)
        )
    return result.rowcount == 1


def mark_deleting(store: Store, workspace_id: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            workspaces.update()
            .where(workspaces.c.id == workspace_id)
            .values(status="deleting", name_key=None, updated_at=time.time())
        )


def delete(store: Store, workspace_id: str) -> None:
    """Remove the row and (by cascade) its snapshots' rows."""
    with store.engine.begin() as conn:
        conn.execute(workspace_snapshots.delete().where(workspace_snapshots.c.workspace_id == workspace_id))
        conn.execute(workspaces.delete().where(workspaces.c.id == workspace_id))


def update(store: Store, workspace: Row, *, name: str | None, is_template: bool | None) -> None:
    values: dict[str, Any] = {"updated_at": time.time()}
    if name is not None:
        values.update(name=name, name_key=name.lower())
    if is_template is not None:
        values["is_template"] = is_template
    try:
        with store.engine.begin() as conn:
            conn.execute(workspaces.update().where(workspaces.c.id == workspace["id"], _VISIBLE).values(**values))
    except sa.exc.IntegrityError:
        raise name_taken(name or workspace["name"]) from None


def with_host(store: Store, condition: sa.ColumnElement[bool]) -> list[Row]:
    """Workspaces matching ``condition``, with their host's ``url`` and ``last_heartbeat``."""
    query = (
        sa.select(workspaces, hosts.c.url, hosts.c.last_heartbeat)
        .outerjoin(hosts, hosts.c.id == workspaces.c.host_id)
        .where(condition)
    )
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def overdue_creates(store: Store, before: float) -> list[Row]:
    return with_host(store, sa.and_(workspaces.c.status == "creating", workspaces.c.create_deadline < before))


def deleting(store: Store) -> list[Row]:
    return with_host(store, workspaces.c.status == "deleting")


# -- snapshots --------------------------------------------------------------


def insert_snapshot(store: Store, row: Row) -> None:
    try:
        with store.engine.begin() as conn:
            conn.execute(workspace_snapshots.insert().values(**row))
    except sa.exc.IntegrityError:
        raise errors.NotFound("the workspace is gone", code="workspace_not_found") from None


def finish_snapshot(store: Store, snapshot_id: str, frozen: bool) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            workspace_snapshots.update()
            .where(workspace_snapshots.c.id == snapshot_id)
            .values(status="ready", frozen=frozen, create_deadline=None)
        )


def snapshot(store: Store, workspace_id: str, snapshot_id: str) -> Row | None:
    """The snapshot, only if it belongs to this workspace."""
    query = sa.select(workspace_snapshots).where(
        workspace_snapshots.c.id == snapshot_id, workspace_snapshots.c.workspace_id == workspace_id
    )
    with store.engine.connect() as conn:
        return _one(conn, query)


def snapshots_of(store: Store, workspace_id: str) -> list[Row]:
    query = (
        sa.select(workspace_snapshots)
        .where(workspace_snapshots.c.workspace_id == workspace_id)
        .order_by(workspace_snapshots.c.created_at, workspace_snapshots.c.id)
    )
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def delete_snapshot(store: Store, snapshot_id: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(workspace_snapshots.delete().where(workspace_snapshots.c.id == snapshot_id))


def overdue_snapshots(store: Store, before: float) -> list[Row]:
    """Snapshots stuck creating, with their workspace's ``host_id``."""
    query = (
        sa.select(workspace_snapshots, workspaces.c.host_id)
        .join(workspaces, workspaces.c.id == workspace_snapshots.c.workspace_id)
        .where(workspace_snapshots.c.status == "creating", workspace_snapshots.c.create_deadline < before)
    )
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


# -- storage pools ----------------------------------------------------------


def upsert_storage(store: Store, host_id: str, usage: Row) -> None:
    values = {
        "reflink": usage["reflink"],
        "capacity_bytes": usage["capacity_bytes"],
        "free_bytes": usage["free_bytes"],
        "updated_at": time.time(),
    }
    with store.engine.begin() as conn:
        updated = conn.execute(host_storage.update().where(host_storage.c.host_id == host_id).values(**values))
        if updated.rowcount == 0:
            conn.execute(host_storage.insert().values(host_id=host_id, **values))


def hosts_with_storage(store: Store, heard_since: float) -> list[Row]:
    """Hosts heard from since ``heard_since`` that have a storage pool, with its figures."""
    query = (
        sa.select(hosts, host_storage.c.reflink, host_storage.c.free_bytes)
        .join(host_storage, host_storage.c.host_id == hosts.c.id)
        .where(hosts.c.last_heartbeat > heard_since)
    )
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]
