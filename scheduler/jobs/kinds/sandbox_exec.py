"""``sandbox.exec``: one command in a sandbox, as ``POST /v1/exec`` runs it, but queued.

The target is the caller's running session (``session_id``), a workspace
(a session is started on it and ended after), or a fresh ephemeral sandbox
(``ephemeral: true``, optional ``image``), destroyed after. The job succeeds
when the command exits 0.
"""

from __future__ import annotations

from typing import Any

from scheduler.jobs import commands
from scheduler.jobs.context import JobRun
from scheduler.jobs.kind import JobKind, Outcome, register
from scheduler.models import ExecBody


class SandboxExecInput(ExecBody):
    """A command and where to run it: exactly one of session_id, workspace, or ephemeral: true (with image)."""


def _outcome(result: dict[str, Any]) -> Outcome:
    if result["exit_code"] == 0:
        return Outcome(True, result)
    if result["timed_out"]:
        error = {"code": "command_timed_out", "message": "the command did not finish within timeout_ms and was killed"}
    else:
        error = {"code": "command_failed", "message": f"the command exited with code {result['exit_code']}"}
    return Outcome(False, result, error)


class SandboxExec(JobKind[SandboxExecInput]):
    name = "sandbox.exec"
    description = "Run a command in a sandbox (workspace-backed or ephemeral)"
    scope = "exec.write"
    read_scope = "sessions.read"
    input_model = SandboxExecInput

    async def run(self, run: JobRun, data: SandboxExecInput) -> Outcome:
        if data.session_id is not None:
            session = await commands.use_session(run, data.session_id)
        else:
            session = await commands.open_session(
                run, ephemeral=data.ephemeral, workspace=data.workspace, image=data.image
            )
        command = {"command": data.command, "env": data.env, "cwd": data.cwd, "timeout_ms": data.timeout_ms}
        result = await commands.run_command(run, session, command)
        return _outcome({**result, "session_id": session["id"]})

    async def reattach(self, run: JobRun, data: SandboxExecInput) -> Outcome:
        result = await commands.reattach_command(run)
        return _outcome({**result, "session_id": run.checkpoint["session_id"]})

    async def cleanup(self, run: JobRun, data: SandboxExecInput, *, kill: bool) -> None:
        reason = "its job was canceled" if kill else "its job ended"
        killed = await commands.cleanup(run, kill=kill, reason=reason)
        if killed is not None:
            run.partial_result = {**killed, "session_id": run.checkpoint["session_id"]}


register(SandboxExec())
