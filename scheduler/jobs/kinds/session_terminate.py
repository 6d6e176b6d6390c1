"""``session.terminate``: end one of the account's sessions, as ``DELETE /v1/sessions/{id}`` does.

Refused (409) while the session has active connections, unless ``force``.
Ending a session twice is harmless, so an attempt cut off by a scheduler
restart simply runs again.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from scheduler.jobs.context import JobRun
from scheduler.jobs.kind import JobKind, Outcome, register

SessionId = Annotated[
    str, StringConstraints(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
]


class SessionTerminateInput(BaseModel):
    """The session to terminate; force overrides active connections."""

    model_config = ConfigDict(extra="forbid", strict=True)

    session_id: SessionId
    force: bool = False


async def terminate(run: JobRun, session_id: str, force: bool) -> dict[str, str]:
    row = await run.sessions.terminate(
        run.account_id, session_id.lower(), force=force, reason=f"terminated by job {run.job_id}"
    )
    return {"session_id": row["id"], "status": row["status"]}


class SessionTerminate(JobKind[SessionTerminateInput]):
    name = "session.terminate"
    description = "Terminate a session"
    scope = "sessions.write"
    read_scope = "sessions.read"
    input_model = SessionTerminateInput

    async def run(self, run: JobRun, data: SessionTerminateInput) -> Outcome:
        return Outcome(True, await terminate(run, data.session_id, data.force))


register(SessionTerminate())
