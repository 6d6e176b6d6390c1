"""Store queries for webhooks and their durable outbox of deliveries.

Deliveries are claimed with a lease (``locked_until``) by a conditional
update, so several scheduler replicas (or a restarted one) never send the
same attempt twice at once, and a claim left by a crashed process expires.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from scheduler.events import envelope
from scheduler.quota_settings import Usage
from scheduler.store.schema import webhook_attempts, webhook_deliveries, webhooks

Row = dict[str, Any]


class WebhookQueries:
    engine: sa.Engine
    outbox_listeners: list[Callable[[], None]]
    quota_guard: Callable[[sa.Connection, str, Usage], None] | None

    # -- webhooks -------------------------------------------------------------

    def insert_webhook(self, row: Row) -> None:
        with self.engine.begin() as conn:
            if self.quota_guard is not None:
                self.quota_guard(conn, row["account_id"], Usage(webhooks=1))
            conn.execute(webhooks.insert().values(**row))

    def webhooks(self, account_id: str) -> list[Row]:
        query = (
            sa.select(webhooks)
            .where(webhooks.c.account_id == account_id)
            .order_by(webhooks.c.created_at, webhooks.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def webhook(self, account_id: str, webhook_id: str) -> Row | None:
        query = sa.select(webhooks).where(webhooks.c.account_id == account_id, webhooks.c.id == webhook_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def update_webhook(self, account_id: str, webhook_id: str, values: Row) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                webhooks.update()
                .where(webhooks.c.account_id == account_id, webhooks.c.id == webhook_id)
                .values(**values, updated_at=time.time())
            )

    def delete_webhook(self, account_id: str, webhook_id: str) -> bool:
        """Delete it with its delivery log (cascade); False if there was none."""
        with self.engine.begin() as conn:
            result = conn.execute(
                webhooks.delete().where(webhooks.c.account_id == account_id, webhooks.c.id == webhook_id)
            )
        return result.rowcount == 1

    # -- publishing -----------------------------------------------------------

    def enqueue_event(
        self, account_id: str, event_type: str, data: dict[str, Any], only_webhook: str | None = None
    ) -> int:
        with self.engine.begin() as conn:
            queued = self.enqueue_event_in(conn, account_id, event_type, data, only_webhook)
        if queued:
            self.notify_outbox()
        return queued

    def enqueue_event_in(
        self,
        conn: sa.Connection,
        account_id: str,
        event_type: str,
        data: dict[str, Any],
        only_webhook: str | None = None,
    ) -> int:
        """Queue one delivery per active webhook subscribed to ``event_type``, in the caller's transaction."""
        query = sa.select(webhooks.c.id, webhooks.c.events).where(
            webhooks.c.account_id == account_id, webhooks.c.active.is_(True)
        )
        if only_webhook is not None:
            query = query.where(webhooks.c.id == only_webhook)
        targets = [r.id for r in conn.execute(query) if only_webhook is not None or event_type in r.events]
        if not targets:
            return 0
        now = time.time()
        event_id = str(uuid.uuid4())
        payload = envelope(event_id, event_type, account_id, now, data)
        conn.execute(
            webhook_deliveries.insert(),
            [
                {
                    "id": str(uuid.uuid4()),
                    "webhook_id": webhook_id,
                    "account_id": account_id,
                    "event_id": event_id,
                    "event_type": event_type,
                    "payload": payload,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "locked_until": None,
                    "created_at": now,
                }
                for webhook_id in targets
            ],
        )
        return len(targets)

    def notify_outbox(self) -> None:
        for listener in self.outbox_listeners:
            listener()

    # -- the delivery worker's side ---------------------------------------------

    def claim_due_deliveries(self, now: float, limit: int, lease: float) -> list[Row]:
        """Claim up to ``limit`` due deliveries for ``lease`` seconds, with their webhook's URL and secret."""
        d = webhook_deliveries.c
        due = sa.and_(
            d.status == "pending",
            d.next_attempt_at <= now,
            sa.or_(d.locked_until.is_(None), d.locked_until < now),
        )
        query = (
            sa.select(webhook_deliveries, webhooks.c.url, webhooks.c.secret)
            .join(webhooks, webhooks.c.id == d.webhook_id)
            .where(due)
            .order_by(d.next_attempt_at)
            .limit(limit)
        )
        claimed = []
        with self.engine.begin() as conn:
            for row in conn.execute(query).mappings().all():
                won = conn.execute(
                    webhook_deliveries.update().where(d.id == row["id"], due).values(locked_until=now + lease)
                )
                if won.rowcount == 1:
                    claimed.append(dict(row))
        return claimed

    def next_delivery_due(self) -> float | None:
        """When the next pending delivery becomes claimable: its retry time, or its claim's expiry if later."""
        d = webhook_deliveries.c
        due_at = sa.case((d.locked_until > d.next_attempt_at, d.locked_until), else_=d.next_attempt_at)
        query = sa.select(sa.func.min(due_at)).where(d.status == "pending")
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        return float(value) if value is not None else None

    def record_attempt(
        self,
        delivery: Row,
        *,
        started_at: float,
        duration_ms: float,
        status_code: int | None,
        error: str | None,
        next_attempt_at: float | None,
    ) -> None:
        """Log one attempt and settle the delivery: succeeded, retried later, or failed for good."""
        number = delivery["attempts"] + 1
        succeeded = status_code is not None and 200 <= status_code < 300
        status = "succeeded" if succeeded else ("pending" if next_attempt_at is not None else "failed")
        with self.engine.begin() as conn:
            conn.execute(
                webhook_attempts.insert().values(
                    delivery_id=delivery["id"],
                    number=number,
                    started_at=started_at,
                    duration_ms=duration_ms,
                    status_code=status_code,
                    error=error,
                )
            )
            conn.execute(
                webhook_deliveries.update()
                .where(webhook_deliveries.c.id == delivery["id"])
                .values(
                    status=status,
                    attempts=number,
                    next_attempt_at=None if succeeded else next_attempt_at,
                    locked_until=None,
                    last_status_code=status_code,
                    last_error=error,
                    delivered_at=time.time() if succeeded else None,
                )
            )

    def release_delivery(self, delivery_id: str) -> None:
        """Give back a claim without an attempt (the worker is stopping)."""
        with self.engine.begin() as conn:
            conn.execute(
                webhook_deliveries.update().where(webhook_deliveries.c.id == delivery_id).values(locked_until=None)
            )

    # -- the delivery log -------------------------------------------------------

    def deliveries(
        self,
        account_id: str,
        webhook_id: str,
        *,
        status: str | None,
        limit: int,
        after: tuple[float, str] | None,
    ) -> list[Row]:
        """Newest first, each with its ``attempts_log``; ``after`` is the last (created_at, id) seen."""
        d = webhook_deliveries.c
        query = sa.select(webhook_deliveries).where(d.account_id == account_id, d.webhook_id == webhook_id)
        if status is not None:
            query = query.where(d.status == status)
        if after is not None:
            created_at, delivery_id = after
            query = query.where(
                sa.or_(d.created_at < created_at, sa.and_(d.created_at == created_at, d.id < delivery_id))
            )
        query = query.order_by(d.created_at.desc(), d.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            ids = [r["id"] for r in rows]
            attempts: dict[str, list[Row]] = {i: [] for i in ids}
            if ids:
                log = (
                    sa.select(webhook_attempts)
                    .where(webhook_attempts.c.delivery_id.in_(ids))
                    .order_by(webhook_attempts.c.number)
                )
                for a in conn.execute(log).mappings():
                    attempts[a["delivery_id"]].append(dict(a))
        for row in rows:
            row["attempts_log"] = attempts[row["id"]]
        return rows
