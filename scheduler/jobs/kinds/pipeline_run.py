"""``pipeline.run``: ordered steps in one sandbox, sharing its filesystem; stops at the first failure.

The sandbox is a workspace's (a session is started on it and ended after;
the workspace keeps what the steps wrote) or, with ``ephemeral: true``, a
fresh one destroyed after. Each step has its own ``timeout_ms``. The result
lists every step: ``succeeded``, ``failed`` (with its exit code and
output), or ``skipped`` after a failure; ``exit_code`` is the last step
run's. The steps done so far are checkpointed, so a pipeline survives a
scheduler restart mid-step: the step is re-attached, the rest run after.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scheduler.jobs import commands
from scheduler.jobs.context import JobRun
from scheduler.jobs.kind import JobKind, Outcome, register
from scheduler.models import DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS, ImageName, Selector

Command = Annotated[str, Field(min_length=1)] | Annotated[list[str], Field(min_length=1)]


class PipelineStep(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    command: Command
    timeout_ms: int = Field(default=DEFAULT_TIMEOUT_MS, gt=0, le=MAX_TIMEOUT_MS)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)


class PipelineInput(BaseModel):
    """Steps run in order in one sandbox: a workspace's, or an ephemeral one (ephemeral: true, with image)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workspace: Selector | None = None
    ephemeral: bool = False
    image: ImageName | None = None
    env: dict[str, str] = Field(default_factory=dict, description="for every step; a step's env wins")
    steps: list[PipelineStep] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one_sandbox(self) -> PipelineInput:
        if (self.workspace is not None) == self.ephemeral:
            raise ValueError("give exactly one of workspace or ephemeral: true")
        if self.image is not None and not self.ephemeral:
            raise ValueError("image is accepted only when ephemeral is true")
        return self


def _step_result(step: PipelineStep, status: str, result: dict[str, Any], run: JobRun) -> dict[str, Any]:
    return {
        "command": step.command,
        "status": status,
        **result,
        "output": run.output,
        "output_truncated": run.output_truncated,
    }


def _result(session_id: str, data: PipelineInput, done: list[dict[str, Any]]) -> dict[str, Any]:
    skipped = [{"command": s.command, "status": "skipped"} for s in data.steps[len(done) :]]
    failed = next((i for i, s in enumerate(done) if s["status"] != "succeeded"), None)
    return {
        "session_id": session_id,
        "steps": done + skipped,
        "exit_code": done[-1].get("exit_code") if done else None,
        "failed_step": failed,
    }


class PipelineRun(JobKind[PipelineInput]):
    name = "pipeline.run"
    description = "Execute ordered steps on a shared workspace"
    scope = "exec.write"
    read_scope = "sessions.read"
    input_model = PipelineInput

    async def run(self, run: JobRun, data: PipelineInput) -> Outcome:
        session = await commands.open_session(run, ephemeral=data.ephemeral, workspace=data.workspace, image=data.image)
        return await self._steps(run, data, session["id"], [], None)

    async def reattach(self, run: JobRun, data: PipelineInput) -> Outcome:
        current = await commands.reattach_command(run)
        return await self._steps(run, data, run.checkpoint["session_id"], list(run.checkpoint["steps"]), current)

    async def _steps(
        self,
        run: JobRun,
        data: PipelineInput,
        session_id: str,
        done: list[dict[str, Any]],
        current: dict[str, Any] | None,
    ) -> Outcome:
        """Run the steps after ``done``; ``current`` is the result of the next one if it already ran."""
        while len(done) < len(data.steps):
            step = data.steps[len(done)]
            if current is None:
                await run.save(step=len(done), steps=done)
                session = await run.sessions.get(run.account_id, session_id)
                command = {"command": step.command, "env": {**data.env, **step.env}, "cwd": step.cwd,
                           "timeout_ms": step.timeout_ms}  # fmt: skip
                current = await commands.run_command(run, session, command)
            done.append(_step_result(step, "succeeded" if current["exit_code"] == 0 else "failed", current, run))
            run.partial_result = _result(session_id, data, done)
            if current["exit_code"] != 0:
                break
            current = None
        result = _result(session_id, data, done)
        if result["failed_step"] is None:
            return Outcome(True, result)
        index = result["failed_step"]
        step_result = done[index]
        how = "timed out" if step_result["timed_out"] else f"exited with code {step_result['exit_code']}"
        error = {"code": "step_failed", "message": f"step {index + 1} of {len(data.steps)} {how}"}
        return Outcome(False, result, error)

    async def cleanup(self, run: JobRun, data: PipelineInput, *, kill: bool) -> None:
        reason = "its job was canceled" if kill else "its job ended"
        killed = await commands.cleanup(run, kill=kill, reason=reason)
        if killed is not None:
            done = list(run.checkpoint.get("steps", []))
            done.append(_step_result(data.steps[len(done)], "canceled", killed, run))
            run.partial_result = _result(run.checkpoint["session_id"], data, done)


register(PipelineRun())
