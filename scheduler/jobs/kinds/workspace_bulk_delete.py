"""``workspace.bulk_delete``: delete many workspaces; each is reported on its own.

The conflict rule applies to each: one with a session attached is refused
(and reported) unless ``force``. The job succeeds when every workspace was
deleted, and fails listing those that were not.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from scheduler.api import Selector
from scheduler.jobs import bulk
from scheduler.jobs.context import JobRun
from scheduler.jobs.kind import JobKind, Outcome, register
from scheduler.jobs.kinds.workspace_delete import delete, workspaces_of


class WorkspaceBulkDeleteInput(BaseModel):
    """The workspaces (names or ids); force terminates sessions attached to them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workspaces: list[Selector] = Field(min_length=1, max_length=1000)
    force: bool = False


class WorkspaceBulkDelete(JobKind[WorkspaceBulkDeleteInput]):
    name = "workspace.bulk_delete"
    description = "Delete multiple workspaces"
    scope = "workspaces.write"
    read_scope = "workspaces.read"
    needs = frozenset({"workspaces"})
    input_model = WorkspaceBulkDeleteInput

    async def run(self, run: JobRun, data: WorkspaceBulkDeleteInput) -> Outcome:
        workspaces = workspaces_of(run)

        async def one(selector: str) -> dict[str, Any]:
            deleted = await delete(workspaces, run.account_id, selector, data.force)
            return {"id": deleted["id"], "status": deleted["status"]}

        return bulk.outcome(await bulk.each(data.workspaces, "workspace", one), "workspaces")


register(WorkspaceBulkDelete())
