"""Jobs as callers see them: submit, read, cancel, retry; and the worker that runs them.

Every method takes the ``account_id`` whose jobs it may touch; another
account's job is simply not found. State changes go through the state
machine and a guarded store update, retried on a lost race.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Collection, Mapping
from typing import Any

import trio

from chaser.wire import errors
from scheduler.config import SchedulerConfig
from scheduler.core.job_states import TERMINAL, CancelRequest, JobStateMachine, Retry, Status, Submit
from scheduler.jobs.context import JobServices, WorkspaceDeleter
from scheduler.jobs.events import job_finished
from scheduler.jobs.kind import JobKind, registered
from scheduler.jobs.store import JobStore
from scheduler.jobs.worker import CANCELED, JobWorker
from scheduler.sessions import SessionService
from scheduler.store import Row
from scheduler.timefmt import rfc3339

log = logging.getLogger(__name__)

# How long a cancel request waits for a running job to stop before answering.
_CANCEL_WAIT = 15.0
_CANCEL_POLL = 0.05
# Guarded updates lost to concurrent writers before giving up.
_RACES = 5


class JobService:
    def __init__(
        self, sessions: SessionService, config: SchedulerConfig, workspaces: WorkspaceDeleter | None = None
    ) -> None:
        self.jobs = JobStore(sessions.store)
        self.services = JobServices(sessions=sessions, workspaces=workspaces)
        self.worker = JobWorker(self.jobs, self.services, config)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.worker.run(task_status=task_status)

    def kinds(self) -> Mapping[str, JobKind[Any]]:
        """The kinds this deployment offers, by name."""
        return {name: kind for name, kind in sorted(registered().items()) if kind.available(self.services)}

    def kind(self, name: str) -> JobKind[Any]:
        kind = self.kinds().get(name)
        if kind is None:
            raise errors.InvalidInput(
                f"kind: unknown job kind {name!r}; available: {', '.join(self.kinds())}", code="unknown_kind"
            )
        return kind

    # -- submit -----------------------------------------------------------

    async def submit(
        self,
        account_id: str,
        kind: JobKind[Any],
        data: Mapping[str, Any],
        *,
        run_at: float | None,
        idempotency_key: str | None,
        creator_user_id: str | None = None,
        creator_key_id: str | None = None,
    ) -> tuple[Row, bool]:
        """Queue a job (``data`` already validated); with a known key, that job (and False).

        The creator (the key, or the user of a JWT) is kept: each attempt
        first checks that they still may act in the account.
        """
        now = time.time()
        due = run_at if run_at is not None else now
        status = JobStateMachine().apply(Submit(due, now)).status
        fingerprint = hashlib.sha256(
            json.dumps({"kind": kind.name, "input": data, "run_at": run_at}, sort_keys=True).encode()
        ).hexdigest()
        row: Row = {
            "id": str(uuid.uuid4()),
            "account_id": account_id,
            "kind": kind.name,
            "input": dict(data),
            "status": status,
            "idempotency_key": idempotency_key,
            "fingerprint": fingerprint,
            "run_at": max(due, now),
            "created_at": now,
            "queued_at": now if status is Status.QUEUED else None,
            "started_at": None,
            "finished_at": None,
            "cancel_requested_at": None,
            "attempt": 0,
            "worker_id": None,
            "lease_until": None,
            "result": None,
            "error": None,
            "creator_user_id": creator_user_id,
            "creator_key_id": creator_key_id,
        }
        stored, created = await self.jobs.run(self.jobs.insert, row)
        if not created and stored["fingerprint"] != fingerprint:
            raise errors.Conflict(
                f"idempotency_key {idempotency_key!r} was used for job {stored['id']} with a different "
                "kind, input or run_at",
                code="idempotency_conflict",
            )
        if created:
            log.info("job %s submitted (%s)", kind.name, status, extra={"job_id": row["id"], "account_id": account_id})
            self.worker.notify()
        return stored, created

    # -- read -------------------------------------------------------------

    async def get(self, account_id: str, job_id: str) -> Row:
        row = await self.jobs.run(self.jobs.get, account_id, job_id)
        if row is None:
            raise errors.NotFound(f"job {job_id} not found", code="job_not_found")
        return row

    async def attempts(self, job_id: str) -> list[Row]:
        return await self.jobs.run(self.jobs.attempts, job_id)

    async def list_page(
        self,
        account_id: str,
        *,
        kinds: Collection[str],
        status: str | None,
        limit: int,
        after: tuple[float, str] | None,
    ) -> list[Row]:
        return await self.jobs.run(
            self.jobs.list_jobs, account_id, kinds=kinds, status=status, limit=limit, after=after
        )

    # -- cancel, retry ----------------------------------------------------

    async def cancel(self, account_id: str, job_id: str) -> Row:
        """Cancel a waiting job at once; stop a running one (waiting a while for it to stop)."""
        for _ in range(_RACES):
            row = await self.get(account_id, job_id)
            machine = JobStateMachine(Status(row["status"]), cancel_requested=row["cancel_requested_at"] is not None)
            transition = machine.apply(CancelRequest())  # 409 once finished
            now = time.time()
            if transition.stop_worker:
                if row["cancel_requested_at"] is None and not await self.jobs.run(
                    self.jobs.transition, job_id, Status.RUNNING, cancel_requested_at=now
                ):
                    continue
                self.worker.stop(job_id)  # at once if it runs here; other replicas see it on their next watch
                return await self._settled(account_id, job_id)
            if await self.jobs.run(
                self.jobs.transition, job_id, row["status"], status=Status.CANCELED, finished_at=now, error=CANCELED
            ):
                await job_finished(self.jobs.store, job_id, account_id, row["kind"], Status.CANCELED)
                return await self.get(account_id, job_id)
        raise errors.Conflict(f"job {job_id} kept changing; try again", code="job_busy")

    async def _settled(self, account_id: str, job_id: str) -> Row:
        """The job once it has stopped, or as it is after ``_CANCEL_WAIT``."""
        with trio.move_on_after(_CANCEL_WAIT):
            while (row := await self.get(account_id, job_id))["status"] not in TERMINAL:
                await trio.sleep(_CANCEL_POLL)
            return row
        return await self.get(account_id, job_id)

    async def retry(
        self, account_id: str, job_id: str, creator_user_id: str | None = None, creator_key_id: str | None = None
    ) -> dict[str, Any]:
        """Queue a failed or canceled job again: a new attempt, the earlier ones kept.

        Whoever retries becomes its creator (the one checked before each
        attempt). Returns the job as the retry left it (queued), rendered
        before the worker is woken to take it.
        """
        for _ in range(_RACES):
            row = await self.get(account_id, job_id)
            JobStateMachine(Status(row["status"])).apply(Retry())  # 409 unless failed or canceled
            now = time.time()
            if await self.jobs.run(
                self.jobs.transition,
                job_id,
                row["status"],
                status=Status.QUEUED,
                run_at=now,
                queued_at=now,
                finished_at=None,
                cancel_requested_at=None,
                result=None,
                error=None,
                creator_user_id=creator_user_id,
                creator_key_id=creator_key_id,
            ):
                queued = self.to_json(await self.get(account_id, job_id), await self.attempts(job_id))
                self.worker.notify()
                return queued
        raise errors.Conflict(f"job {job_id} kept changing; try again", code="job_busy")

    # -- presentation -----------------------------------------------------

    @staticmethod
    def to_json(row: Row, attempts: list[Row] | None = None) -> dict[str, Any]:
        """A job; with its ``attempts``, also their history and the latest attempt's output."""
        body: dict[str, Any] = {
            "id": row["id"],
            "kind": row["kind"],
            "status": row["status"],
            "input": row["input"],
            "idempotency_key": row["idempotency_key"],
            "run_at": rfc3339(row["run_at"]),
            "created_at": rfc3339(row["created_at"]),
            "queued_at": rfc3339(row["queued_at"]),
            "started_at": rfc3339(row["started_at"]),
            "finished_at": rfc3339(row["finished_at"]),
            "cancel_requested_at": rfc3339(row["cancel_requested_at"]),
            "attempt": row["attempt"],
            "result": row["result"],
            "error": row["error"],
        }
        if attempts is not None:
            latest = attempts[-1] if attempts else None
            body["output"] = latest["output"] if latest else ""
            body["output_truncated"] = latest["output_truncated"] if latest else False
            body["attempts"] = [
                {
                    "number": a["number"],
                    "status": a["status"],
                    "started_at": rfc3339(a["started_at"]),
                    "finished_at": rfc3339(a["finished_at"]),
                    "reattached": a["reattached"],
                    "result": a["result"],
                    "error": a["error"],
                    "output": a["output"],
                    "output_truncated": a["output_truncated"],
                }
                for a in attempts
            ]
        return body
