"""``session.bulk_terminate``: end many sessions; each is reported on its own.

The job succeeds when every session was terminated (or already was), and
fails listing those that could not be (unknown ids, active connections
without ``force``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from scheduler.jobs import bulk
from scheduler.jobs.context import JobRun
from scheduler.jobs.kind import JobKind, Outcome, register
from scheduler.jobs.kinds.session_terminate import SessionId, terminate


class SessionBulkTerminateInput(BaseModel):
    """The sessions to terminate; force overrides active connections."""

    model_config = ConfigDict(extra="forbid", strict=True)

    session_ids: list[SessionId] = Field(min_length=1, max_length=1000)
    force: bool = False


class SessionBulkTerminate(JobKind[SessionBulkTerminateInput]):
    name = "session.bulk_terminate"
    description = "Terminate multiple sessions"
    scope = "sessions.write"
    read_scope = "sessions.read"
    input_model = SessionBulkTerminateInput

    async def run(self, run: JobRun, data: SessionBulkTerminateInput) -> Outcome:
        async def one(session_id: str) -> dict[str, str]:
            return {"status": (await terminate(run, session_id, data.force))["status"]}

        return bulk.outcome(await bulk.each(data.session_ids, "session_id", one), "sessions")


register(SessionBulkTerminate())
