"""``workspace.delete``: delete one of the account's workspaces, as ``DELETE /v1/workspaces/{selector}`` does.

Refused (409) while a session is attached unless ``force``, which
terminates that session first: the seeds' conflict rule. The disk is gone
once the job succeeds. Offered where the deployment has a workspace service.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from scheduler.api import Selector
from scheduler.jobs.context import JobRun, WorkspaceDeleter
from scheduler.jobs.kind import JobKind, Outcome, register


class WorkspaceDeleteInput(BaseModel):
    """The workspace (name or id); force terminates a session attached to it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workspace: Selector
    force: bool = False


async def delete(workspaces: WorkspaceDeleter, account_id: str, selector: str, force: bool) -> dict[str, Any]:
    row = await workspaces.resolve(account_id, selector)
    await workspaces.delete(account_id, row["id"], force=force)
    return {"id": row["id"], "name": row["name"], "status": "deleted"}


def workspaces_of(run: JobRun) -> WorkspaceDeleter:
    workspaces = run.services.workspaces
    assert workspaces is not None, "workspace kinds are offered only with a workspace service"
    return workspaces


class WorkspaceDelete(JobKind[WorkspaceDeleteInput]):
    name = "workspace.delete"
    description = "Delete a workspace"
    scope = "workspaces.write"
    read_scope = "workspaces.read"
    needs = frozenset({"workspaces"})
    input_model = WorkspaceDeleteInput

    async def run(self, run: JobRun, data: WorkspaceDeleteInput) -> Outcome:
        return Outcome(True, await delete(workspaces_of(run), run.account_id, data.workspace, data.force))


register(WorkspaceDelete())
