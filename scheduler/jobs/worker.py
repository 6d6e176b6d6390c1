"""The job worker: claims jobs from the store and runs each attempt in its own cancel scope.

One per scheduler process, owning every attempt's task in its nursery. It
is woken when a job is submitted here, and polls the store otherwise (for
jobs submitted to other replicas, scheduled jobs coming due, and claims
that lapsed).

A claim is a lease, renewed while the attempt runs. A lease that lapses
means its worker died (or stopped and let go): any worker takes the job
over and, from the attempt's checkpoint, re-attaches to work that started
or cleans up and queues again work that never did. How an attempt ends
decides what happens to what it holds:

- it ran to its end, or failed: the kind's ``cleanup`` releases what it holds;
- a cancel request stopped it: ``cleanup(kill=True)`` also kills the command;
- the scheduler is shutting down: nothing is touched and the lease is
  released, so the next worker re-attaches at once;
- another worker took it over (lease lost): nothing is touched or recorded.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import trio
from pydantic import BaseModel, ValidationError

from chaser.wire import errors
from scheduler.config import SchedulerConfig
from scheduler.core.job_states import (
    TERMINAL,
    WAITING,
    Finish,
    Interrupted,
    JobStateMachine,
    Status,
    Stopped,
)
from scheduler.jobs.context import JobRun, JobServices, LostClaim
from scheduler.jobs.events import job_finished
from scheduler.jobs.kind import CannotReattach, JobKind, Outcome, registered
from scheduler.jobs.store import JobStore
from scheduler.store import Row

log = logging.getLogger(__name__)

CANCELED = {"code": "canceled", "message": "canceled by request"}
# Checked before each attempt: a job does not outlive its creator's right to act.
CREATOR_REVOKED = {
    "code": "creator_revoked",
    "message": "the key that submitted this job was revoked, or its user left the account",
}
# Bounds on the shielded work after an attempt, so a stuck host cannot hold a shutdown.
_CLEANUP_DEADLINE = 60.0
_RECORD_DEADLINE = 30.0
_MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class _Interrupted:
    """The attempt ended before its work started: the job may run again."""

    reason: str


@dataclass
class _Running:
    run: JobRun
    scope: trio.CancelScope
    abandoned: bool = False


class JobWorker:
    def __init__(self, jobs: JobStore, services: JobServices, config: SchedulerConfig) -> None:
        self.jobs = jobs
        self.services = services
        self.config = config
        self.worker_id = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._running: dict[str, _Running] = {}
        self._wakeup = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._dispatch_forever)
                nursery.start_soon(self._watch_forever)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_RECORD_DEADLINE):
                await self.jobs.run(self.jobs.release, self.worker_id)

    def notify(self) -> None:
        """Look at the queue now (a job was submitted, or a slot freed)."""
        self._wakeup.set()

    def stop(self, job_id: str) -> None:
        """Stop this worker's attempt of ``job_id``, whose cancel was requested."""
        running = self._running.get(job_id)
        if running is not None:
            running.run.cancel_requested = True
            running.scope.cancel()

    # -- claiming ---------------------------------------------------------

    def _full(self) -> bool:
        return len(self._running) >= self.config.job_concurrency

    async def _dispatch_forever(self) -> None:
        while True:
            try:
                await self._dispatch()
            except Exception:
                log.exception("job dispatch failed")
            with trio.move_on_after(self.config.job_poll_interval):
                await self._wakeup.wait()
            self._wakeup = trio.Event()

    async def _dispatch(self) -> None:
        lease = self.config.job_lease_timeout
        for job_id in await self.jobs.run(self.jobs.expired, time.time()):
            if self._full():
                return
            if job_id in self._running:
                continue  # ours, its renewal late: not to be taken over by ourselves
            now = time.time()
            taken = await self.jobs.run(self.jobs.take_over, job_id, self.worker_id, now, now + lease)
            if taken is not None:
                log.warning("taking over a job whose worker is gone", extra={"job_id": job_id})
                self._start(*taken, recovered=True)
        await self.jobs.run(self.jobs.promote_due, time.time())
        while not self._full():
            now = time.time()
            claimed = await self.jobs.run(
                self.jobs.claim, self.worker_id, now, now + lease, self.config.job_account_concurrency
            )
            if claimed is None:
                return
            self._start(*claimed, recovered=False)

    def _start(self, job: Row, attempt: Row, *, recovered: bool) -> None:
        assert self._nursery is not None, "JobWorker.run has not started"
        running = _Running(JobRun(self.jobs, self.services, self.worker_id, job, attempt), trio.CancelScope())
        self._running[job["id"]] = running
        if job["cancel_requested_at"] is not None:
            self.stop(job["id"])
        self._nursery.start_soon(self._attempt, running, job, recovered)

    # -- leases and cancel requests ---------------------------------------

    async def _watch_forever(self) -> None:
        renewed = time.monotonic()
        while True:
            await trio.sleep(self.config.job_poll_interval)
            renew = time.monotonic() - renewed >= self.config.job_lease_timeout / 3
            try:
                await self._watch(renew)
            except Exception:
                log.exception("job lease renewal failed")
            else:
                if renew:
                    renewed = time.monotonic()

    async def _watch(self, renew: bool) -> None:
        """Renew our leases; stop attempts whose cancel was requested or whose job another worker took."""
        job_ids = list(self._running)
        if renew:
            await self.jobs.run(self.jobs.renew, self.worker_id, job_ids, time.time() + self.config.job_lease_timeout)
        owned, canceled = await self.jobs.run(self.jobs.watch, self.worker_id, job_ids)
        for job_id in job_ids:
            running = self._running.get(job_id)
            if running is None:
                continue
            if job_id not in owned:
                running.abandoned = True
                running.scope.cancel()
            elif job_id in canceled:
                self.stop(job_id)

    # -- attempts ---------------------------------------------------------

    async def _attempt(self, running: _Running, job: Row, recovered: bool) -> None:
        run = running.run
        kind = registered().get(run.kind)
        data: BaseModel | None = None
        if kind is not None:
            try:
                data = kind.parse(job["input"])
            except ValidationError:
                log.error("stored input no longer valid for its kind", extra=run.log_context)
        try:
            outcome: Outcome | _Interrupted | None = None
            with running.scope:
                outcome = await self._execute(kind, run, job, data, recovered)
            if running.abandoned:
                log.warning("job taken over by another worker; leaving it", extra=run.log_context)
                return
            stopped = running.scope.cancelled_caught
            with trio.CancelScope(shield=True):
                owned, _ = await self.jobs.run(self.jobs.watch, self.worker_id, [run.job_id])
                if run.job_id not in owned:
                    raise LostClaim(run.job_id)
                if kind is not None and data is not None:
                    with trio.move_on_after(_CLEANUP_DEADLINE):
                        try:
                            await kind.cleanup(run, data, kill=stopped)
                        except Exception:
                            log.exception("job cleanup failed; the reconciler ends what is left", extra=run.log_context)
                with trio.move_on_after(_RECORD_DEADLINE):
                    await self._record(run, None if stopped else outcome)
        except LostClaim:
            log.warning("job taken over by another worker; leaving it", extra=run.log_context)
        finally:
            del self._running[run.job_id]
            self.notify()

    async def _execute(
        self, kind: JobKind[Any] | None, run: JobRun, job: Row, data: BaseModel | None, recovered: bool
    ) -> Outcome | _Interrupted:
        if kind is None:
            return Outcome(False, error={"code": "unknown_kind", "message": f"no job kind {run.kind!r} here"})
        if data is None:
            return Outcome(False, error={"code": "invalid_input", "message": f"input no longer valid for {run.kind}"})
        try:
            if not recovered:
                if not await self.jobs.run(self.jobs.creator_may_act, job):
                    return Outcome(False, error=CREATOR_REVOKED)
                return await kind.run(run, data)
            if run.started:
                log.info("re-attaching to a started job", extra=run.log_context)
                return await kind.reattach(run, data)
            return _Interrupted("the scheduler stopped before the job started")
        except CannotReattach:
            message = (
                "the scheduler stopped while the job ran, and this kind cannot be re-attached; "
                "it may have had effects, so it is not retried automatically"
            )
            return Outcome(False, run.partial_result, {"code": "interrupted", "message": message})
        except errors.ApiError as exc:
            if not run.started and isinstance(exc, errors.Unavailable | errors.Timeout):
                return _Interrupted(exc.message)
            return Outcome.failure(exc, run.partial_result)
        except LostClaim:
            raise
        except Exception:
            log.exception("job failed on an unexpected error", extra=run.log_context)
            error = {"code": "internal_error", "message": "the job failed on an internal error; see the scheduler log"}
            return Outcome(False, run.partial_result, error)

    async def _record(self, run: JobRun, outcome: Outcome | _Interrupted | None) -> None:
        """End the attempt and move the job on, in one transaction (``None``: stopped by a cancel)."""
        machine = JobStateMachine(Status.RUNNING, cancel_requested=run.cancel_requested)
        now = time.time()
        job: dict[str, Any] = {}
        if outcome is None:
            status = machine.apply(Stopped()).status
            attempt: dict[str, Any] = {"status": Status.CANCELED, "result": run.partial_result, "error": CANCELED}
        elif isinstance(outcome, _Interrupted):
            retry_at = None
            if run.number < self.config.job_max_attempts:
                retry_at = now + min(2.0 ** (run.number - 1) - 1, _MAX_BACKOFF)
            status = machine.apply(Interrupted(retry_at, now)).status
            if status in WAITING:
                job = {"run_at": retry_at, "queued_at": now if status is Status.QUEUED else None}
                then = "queued again"
            else:
                then = "canceled as requested" if status is Status.CANCELED else "no attempts left"
            error = {"code": "interrupted", "message": f"{outcome.reason}; {then}"}
            attempt = {"status": Status.FAILED, "result": None, "error": error}
        else:
            status = machine.apply(Finish(outcome.succeeded)).status
            attempt = {"status": status, "result": outcome.result, "error": outcome.error}
        job["status"] = status
        if status in TERMINAL:
            job.update(finished_at=now, result=attempt["result"], error=attempt["error"])
            if status is Status.CANCELED:
                job["error"] = CANCELED
        attempt.update(finished_at=now, output=run.output, output_truncated=run.output_truncated)
        if not await self.jobs.run(self.jobs.finish, run.job_id, run.number, self.worker_id, job=job, attempt=attempt):
            raise LostClaim(run.job_id)
        if status in TERMINAL:
            await job_finished(self.jobs.store, run.job_id, run.account_id, run.kind, status)
