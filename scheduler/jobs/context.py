"""What a job kind works with during one attempt: its services and its checkpoint.

The checkpoint is how an attempt survives the scheduler: a kind records
each step *before* taking it (the session id before the session exists,
the command's exec id before it is sent), and marks ``started`` at the
point after which running the work again could repeat an effect. A worker
taking the attempt over after a crash then re-attaches (started) or cleans
up and queues the job again (not started), from the checkpoint alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from scheduler.jobs.store import JobStore
from scheduler.sessions import SessionService
from scheduler.store import Row


class WorkspaceDeleter(Protocol):
    """What workspace jobs need of the workspace service (``scheduler/workspaces.py``)."""

    async def resolve(self, account_id: str, selector: str) -> Row: ...

    async def delete(self, account_id: str, selector: str, *, force: bool) -> None: ...


@dataclass(frozen=True)
class JobServices:
    """The services kinds act through; ``workspaces`` is None where the deployment has none."""

    sessions: SessionService
    workspaces: WorkspaceDeleter | None = None


class LostClaim(Exception):
    """This worker no longer owns the job (another took it over); stop without touching anything."""


class JobRun:
    """One attempt of one job, as its kind sees it."""

    def __init__(self, jobs: JobStore, services: JobServices, worker_id: str, job: Row, attempt: Row) -> None:
        self._jobs = jobs
        self._worker_id = worker_id
        self.services = services
        self.sessions = services.sessions
        self.job_id: str = job["id"]
        self.account_id: str = job["account_id"]
        self.kind: str = job["kind"]
        self.number: int = attempt["number"]
        self.checkpoint: dict[str, Any] = dict(attempt["checkpoint"] or {})
        self.started: bool = attempt["started"]
        self.output: str = attempt["output"]
        self.output_truncated: bool = attempt["output_truncated"]
        # Set by the worker when a cancel request stops this attempt.
        self.cancel_requested = False
        # What the attempt had achieved, recorded if it ends early (a cancel).
        self.partial_result: dict[str, Any] | None = None

    @property
    def log_context(self) -> dict[str, str]:
        return {"job_id": self.job_id, "account_id": self.account_id}

    async def save(self, *, started: bool = False, **changes: Any) -> None:
        """Merge ``changes`` into the checkpoint and persist it before going on."""
        checkpoint = {**self.checkpoint, **changes}
        started = self.started or started
        await self._write(checkpoint=checkpoint, started=started)
        self.checkpoint, self.started = checkpoint, started

    def set_output(self, output: str, truncated: bool) -> None:
        """The output tail, stored with the attempt's end."""
        self.output, self.output_truncated = output, truncated

    async def publish_output(self, output: str, truncated: bool) -> None:
        """The output tail so far, stored now so that callers can read it while the job runs."""
        if (output, truncated) != (self.output, self.output_truncated):
            await self._write(output=output, output_truncated=truncated)
            self.set_output(output, truncated)

    async def _write(self, **values: Any) -> None:
        saved = await self._jobs.run(self._jobs.save_attempt, self.job_id, self.number, self._worker_id, **values)
        if not saved:
            raise LostClaim(self.job_id)
