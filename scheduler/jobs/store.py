"""Store queries of the job queue: blocking methods, called through ``JobStore.run``.

The queue is the ``jobs`` table itself. Every write a worker makes is
guarded by its claim (``worker_id``) and the state it expects, so a worker
that lost a job to another (its lease ran out) changes nothing.

Claiming is fair and bounded per account: among accounts with queued jobs
and fewer than the limit running, the one with the fewest running goes
first, then its oldest queued job. On PostgreSQL the job row is taken with
``FOR UPDATE SKIP LOCKED`` and the account's count is checked under a
transaction-scoped advisory lock, so replicas neither run a job twice nor
exceed the limit together. SQLite has one scheduler (one worker); there the
claim is the guarded UPDATE alone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa

from scheduler.core.job_states import Claim, Due, Finish, Status, moves
from scheduler.quota_settings import Usage
from scheduler.quotas import QUEUED
from scheduler.store import Row, Store
from scheduler.store.schema import api_keys, job_attempts, jobs, memberships

P = ParamSpec("P")
T = TypeVar("T")

# Accounts considered per claim; more only matter when many are at their limit.
_CANDIDATE_ACCOUNTS = 8


class _LostClaim(Exception):
    """Rolls a worker's write back: the job is no longer this worker's."""


def _one(conn: sa.Connection, query: sa.Select[Any]) -> Row | None:
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


class JobStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine
        self.postgres = store.engine.dialect.name == "postgresql"

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.store.run(fn, *args, **kwargs)

    def creator_may_act(self, job: Row) -> bool:
        """Whether the job's creator still may act in its account: key not revoked, user still a member.

        (A service account's key is deleted or revoked with it; jobs from
        before creators were recorded have none and are let run.)
        """
        with self.engine.connect() as conn:
            if job["creator_key_id"] is not None:
                key = conn.execute(sa.select(api_keys.c.revoked_at).where(api_keys.c.id == job["creator_key_id"]))
                found = key.first()
                if found is None or found.revoked_at is not None:
                    return False
            if job["creator_user_id"] is not None:
                member = sa.select(memberships.c.user_id).where(
                    memberships.c.account_id == job["account_id"], memberships.c.user_id == job["creator_user_id"]
                )
                return conn.execute(member).first() is not None
        return True

    # -- callers' side ----------------------------------------------------

    def insert(self, row: Row) -> tuple[Row, bool]:
        """Insert a job; with a key already used by the account, that job instead (and False)."""
        try:
            with self.engine.begin() as conn:
                if row["status"] in QUEUED:
                    self.store.guard_quota(conn, row["account_id"], Usage(queued_jobs=1))
                conn.execute(jobs.insert().values(**row))
            return row, True
        except sa.exc.IntegrityError:
            if row["idempotency_key"] is None:
                raise
            existing = self.by_key(row["account_id"], row["idempotency_key"])
            if existing is None:
                raise
            return existing, False

    def by_key(self, account_id: str, key: str) -> Row | None:
        query = sa.select(jobs).where(jobs.c.account_id == account_id, jobs.c.idempotency_key == key)
        with self.engine.connect() as conn:
            return _one(conn, query)

    def get(self, account_id: str, job_id: str) -> Row | None:
        with self.engine.connect() as conn:
            return _one(conn, sa.select(jobs).where(jobs.c.id == job_id, jobs.c.account_id == account_id))

    def attempts(self, job_id: str) -> list[Row]:
        query = sa.select(job_attempts).where(job_attempts.c.job_id == job_id).order_by(job_attempts.c.number)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def list_jobs(
        self,
        account_id: str,
        *,
        kinds: Collection[str],
        status: str | None,
        limit: int,
        after: tuple[float, str] | None,
    ) -> list[Row]:
        """Newest first, of ``kinds`` only; ``after`` is the (created_at, id) of the last row seen."""
        query = sa.select(jobs).where(jobs.c.account_id == account_id, jobs.c.kind.in_(list(kinds)))
        if status is not None:
            query = query.where(jobs.c.status == status)
        if after is not None:
            created_at, job_id = after
            query = query.where(
                sa.or_(jobs.c.created_at < created_at, sa.and_(jobs.c.created_at == created_at, jobs.c.id < job_id))
            )
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def transition(self, job_id: str, from_status: str, **values: Any) -> bool:
        """Update a job only if it is still in ``from_status``; one queued again (a retry) counts to its quota."""
        with self.engine.begin() as conn:
            if values.get("status") in QUEUED and from_status not in QUEUED:
                account = conn.execute(sa.select(jobs.c.account_id).where(jobs.c.id == job_id)).scalar_one_or_none()
                if account is not None:
                    self.store.guard_quota(conn, account, Usage(queued_jobs=1))
            result = conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.status == from_status).values(**values)
            )
        return result.rowcount == 1

    # -- workers' side ----------------------------------------------------

    def promote_due(self, now: float) -> int:
        """Scheduled jobs whose time has come join the queue, in the order they were due."""
        due = jobs.c.status.in_(moves(Due)) & (jobs.c.run_at <= now)
        with self.engine.connect() as conn:  # a read first: most polls find nothing, and need no write lock
            if conn.execute(sa.select(jobs.c.id).where(due).limit(1)).first() is None:
                return 0
        with self.engine.begin() as conn:
            result = conn.execute(jobs.update().where(due).values(status=Status.QUEUED, queued_at=jobs.c.run_at))
        return result.rowcount

    def claim(self, worker_id: str, now: float, lease_until: float, account_limit: int) -> tuple[Row, Row] | None:
        """Take the next job fairly and begin its next attempt; None when nothing may run."""
        with self.engine.begin() as conn:
            for account_id in self._candidate_accounts(conn, account_limit):
                if self.postgres and not self._lock_account(conn, account_id, account_limit):
                    continue
                job = _one(
                    conn,
                    sa.select(jobs)
                    .where(jobs.c.account_id == account_id, jobs.c.status.in_(moves(Claim)))
                    .order_by(jobs.c.queued_at, jobs.c.created_at, jobs.c.id)
                    .limit(1)
                    .with_for_update(skip_locked=True),
                )
                if job is None:
                    continue
                number = job["attempt"] + 1
                claimed = conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job["id"], jobs.c.status.in_(moves(Claim)))
                    .values(
                        status=Status.RUNNING,
                        attempt=number,
                        worker_id=worker_id,
                        lease_until=lease_until,
                        started_at=now,
                        cancel_requested_at=None,
                    )
                )
                if claimed.rowcount != 1:
                    continue
                attempt: Row = {
                    "job_id": job["id"],
                    "number": number,
                    "status": Status.RUNNING,
                    "worker_id": worker_id,
                    "started_at": now,
                    "finished_at": None,
                    "reattached": 0,
                    "checkpoint": {},
                    "started": False,
                    "output": "",
                    "output_truncated": False,
                    "result": None,
                    "error": None,
                }
                conn.execute(job_attempts.insert().values(**attempt))
                job.update(status=Status.RUNNING, attempt=number, worker_id=worker_id, started_at=now)
                return job, attempt
        return None

    def _candidate_accounts(self, conn: sa.Connection, limit: int) -> list[str]:
        """Accounts with queued jobs and room to run one: fewest running first, then oldest waiting."""
        running = (
            sa.select(jobs.c.account_id, sa.func.count().label("n"))
            .where(jobs.c.status == Status.RUNNING)
            .group_by(jobs.c.account_id)
            .subquery()
        )
        ready = (
            sa.select(jobs.c.account_id, sa.func.min(jobs.c.queued_at).label("oldest"))
            .where(jobs.c.status == Status.QUEUED)
            .group_by(jobs.c.account_id)
            .subquery()
        )
        n = sa.func.coalesce(running.c.n, 0)
        query = (
            sa.select(ready.c.account_id)
            .outerjoin(running, running.c.account_id == ready.c.account_id)
            .where(n < limit)
            .order_by(n, ready.c.oldest)
            .limit(_CANDIDATE_ACCOUNTS)
        )
        return list(conn.execute(query).scalars())

    def _lock_account(self, conn: sa.Connection, account_id: str, limit: int) -> bool:
        """PostgreSQL: hold the account's claim lock and re-check its count; False to skip it."""
        key = sa.func.hashtextextended(account_id, 0)
        if not conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(key))).scalar():
            return False  # another replica is claiming for this account right now
        running = conn.execute(
            sa.select(sa.func.count()).where(jobs.c.account_id == account_id, jobs.c.status == Status.RUNNING)
        ).scalar_one()
        return bool(running < limit)

    def expired(self, now: float) -> list[str]:
        """Running jobs whose worker's claim has lapsed (it died, or stopped and let go)."""
        query = (
            sa.select(jobs.c.id)
            .where(jobs.c.status == Status.RUNNING, jobs.c.lease_until < now)
            .order_by(jobs.c.lease_until)
            .limit(100)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def take_over(self, job_id: str, worker_id: str, now: float, lease_until: float) -> tuple[Row, Row] | None:
        """Claim a running job whose lease lapsed, with its current attempt; None if another did."""
        with self.engine.begin() as conn:
            taken = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == Status.RUNNING, jobs.c.lease_until < now)
                .values(worker_id=worker_id, lease_until=lease_until)
            )
            if taken.rowcount != 1:
                return None
            job = _one(conn, sa.select(jobs).where(jobs.c.id == job_id))
            assert job is not None
            current = (job_attempts.c.job_id == job_id) & (job_attempts.c.number == job["attempt"])
            conn.execute(
                job_attempts.update()
                .where(current)
                .values(worker_id=worker_id, reattached=job_attempts.c.reattached + 1)
            )
            attempt = _one(conn, sa.select(job_attempts).where(current))
            assert attempt is not None
            return job, attempt

    def renew(self, worker_id: str, job_ids: Collection[str], lease_until: float) -> None:
        if not job_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id.in_(list(job_ids)), jobs.c.worker_id == worker_id, jobs.c.status == Status.RUNNING)
                .values(lease_until=lease_until)
            )

    def release(self, worker_id: str) -> None:
        """Let go of every running job at once, so that a restart or a peer re-attaches without waiting."""
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.worker_id == worker_id, jobs.c.status == Status.RUNNING)
                .values(lease_until=0.0)
            )

    def watch(self, worker_id: str, job_ids: Collection[str]) -> tuple[set[str], set[str]]:
        """Of ``job_ids``: those still this worker's, and those with a cancel requested."""
        if not job_ids:
            return set(), set()
        query = sa.select(jobs.c.id, jobs.c.cancel_requested_at).where(
            jobs.c.id.in_(list(job_ids)), jobs.c.worker_id == worker_id, jobs.c.status == Status.RUNNING
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {r.id for r in rows}, {r.id for r in rows if r.cancel_requested_at is not None}

    def _attempt_of(self, job_id: str, number: int, worker_id: str) -> sa.ColumnElement[bool]:
        return sa.and_(
            job_attempts.c.job_id == job_id,
            job_attempts.c.number == number,
            job_attempts.c.worker_id == worker_id,
            job_attempts.c.status == Status.RUNNING,
        )

    def save_attempt(self, job_id: str, number: int, worker_id: str, **values: Any) -> bool:
        """Record an attempt's checkpoint or live output; False if the job is no longer ours."""
        with self.engine.begin() as conn:
            result = conn.execute(
                job_attempts.update().where(self._attempt_of(job_id, number, worker_id)).values(**values)
            )
        return result.rowcount == 1

    def finish(self, job_id: str, number: int, worker_id: str, *, job: dict[str, Any], attempt: dict[str, Any]) -> bool:
        """End an attempt and move the job on, in one transaction; False if the job is no longer ours."""
        try:
            with self.engine.begin() as conn:
                ended = conn.execute(
                    job_attempts.update().where(self._attempt_of(job_id, number, worker_id)).values(**attempt)
                )
                moved = conn.execute(
                    jobs.update()
                    .where(
                        jobs.c.id == job_id,
                        jobs.c.status.in_(moves(Finish)),
                        jobs.c.worker_id == worker_id,
                        jobs.c.attempt == number,
                    )
                    .values(worker_id=None, lease_until=None, **job)
                )
                if ended.rowcount != 1 or moved.rowcount != 1:
                    raise _LostClaim
        except _LostClaim:
            return False
        return True
