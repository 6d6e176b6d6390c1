"""``workspace.bulk_delete``: delete many workspaces; each is reported on its own.

The job succeeds when every workspace was deleted, and fails listing those
that could not be (unknown selectors, a session attached without ``force``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from scheduler.jobs import bulk
from scheduler.jobs.context import JobRun
from scheduler.jobs.kind import JobKind, Outcome, register
from scheduler.jobs.kinds.workspace_delete import Selector, delete


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
    input_model = WorkspaceBulkDeleteInput
    needs = frozenset({"workspaces"})

    async def run(self, run: JobRun, data: WorkspaceBulkDeleteInput) -> Outcome:
        async def one(selector: str) -> dict[str, str]:
            return {"status": (await delete(run, selector, data.force))["status"]}

        return bulk.outcome(await bulk.each(data.workspaces, "workspace", one), "workspaces")


register(WorkspaceBulkDelete())
