"""Store queries for the audit trail: append and read, nothing else.

There is deliberately no update or delete here, and the database refuses
them too (triggers installed by the migration).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from scheduler.store.schema import audit_events

Row = dict[str, Any]


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    actor: str | None = None  # a user, service account or key id
    resource: str | None = None  # a resource id
    resource_type: str | None = None
    result: str | None = None
    since: float | None = None
    until: float | None = None


class AuditQueries:
    engine: sa.Engine

    def append_audit(self, row: Row) -> None:
        with self.engine.begin() as conn:
            conn.execute(audit_events.insert().values(**row))

    def audit_events(self, account_id: str, where: AuditFilter, *, limit: int, before: int | None) -> list[Row]:
        """Newest first; ``before`` is the id of the last event seen."""
        c = audit_events.c
        query = sa.select(audit_events).where(c.account_id == account_id)
        if where.action is not None:
            query = query.where(c.action == where.action)
        if where.actor is not None:
            query = query.where(sa.or_(c.actor_id == where.actor, c.key_id == where.actor))
        if where.resource is not None:
            query = query.where(c.resource_id == where.resource)
        if where.resource_type is not None:
            query = query.where(c.resource_type == where.resource_type)
        if where.result is not None:
            query = query.where(c.result == where.result)
        if where.since is not None:
            query = query.where(c.time >= where.since)
        if where.until is not None:
            query = query.where(c.time < where.until)
        if before is not None:
            query = query.where(c.id < before)
        query = query.order_by(c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
