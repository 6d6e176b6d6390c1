"""``workspace.delete``: delete one of the account's workspaces, as ``DELETE /v1/workspaces/{w}`` does.

The API's conflict rule holds: refused (409) while a session is attached,
unless ``force``, which terminates that session first. Deleting is
idempotent from the job's side: a workspace already gone is reported as
such, so an attempt cut off by a scheduler restart can simply run again.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from scheduler.jobs.context import JobRun
from scheduler.jobs.kind import JobKind, Outcome, register

Selector = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class WorkspaceDeleteInput(BaseModel):
    """The workspace (name or id); force terminates a session attached to it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workspace: Selector
    force: bool = False


async def delete(run: JobRun, selector: str, force: bool) -> dict[str, str]:
    workspaces = run.services.workspaces
    assert workspaces is not None  # the kind is offered only with a workspace service
    row = await workspaces.resolve(run.account_id, selector)
    await workspaces.delete(run.account_id, row["id"], force=force)
    return {"workspace_id": row["id"], "status": "deleted"}


class WorkspaceDelete(JobKind[WorkspaceDeleteInput]):
    name = "workspace.delete"
    description = "Delete a workspace"
    scope = "workspaces.write"
    read_scope = "workspaces.read"
    input_model = WorkspaceDeleteInput
    needs = frozenset({"workspaces"})

    async def run(self, run: JobRun, data: WorkspaceDeleteInput) -> Outcome:
        return Outcome(True, await delete(run, data.workspace, data.force))


register(WorkspaceDelete())
