"""Commands of sandbox jobs: run on the host as detached execs, followed by polling.

A job's command runs in the agent's own nursery (``agent/sandboxes/detached.py``),
not inside an HTTP request, so it keeps running while a scheduler restarts,
and the worker that takes the job over re-attaches by the exec id. The
worker polls the host: each poll waits up to ``POLL_MS`` for the command to
end and brings the output tail when it changed, which is stored on the
attempt, so the output can be read while the job runs (about a second
behind).

Each step is checkpointed before it is taken: the session id before the
session is created, the exec id (and ``started``) before the command is
sent. ``cleanup`` works from the checkpoint alone, so it is the same after a
normal end, a cancel and a crash.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any

import trio

from chaser.wire import errors
from scheduler.jobs.context import JobRun
from scheduler.store import Row

log = logging.getLogger(__name__)

POLL_MS = 1000
# How long past the command's own timeout the host may take to report its end.
_SLACK = 30.0
# Between polls of a host that did not answer.
_UNREACHABLE_PAUSE = 1.0


async def open_session(
    run: JobRun, *, ephemeral: bool, workspace: str | None, image: str | None, session_type: str = "sandbox"
) -> Row:
    """A new session for the job, ended by ``cleanup`` (its id is checkpointed first)."""
    session_id = str(uuid.uuid4())
    await run.save(session_id=session_id, owned=True)
    return await run.sessions.create(
        run.account_id,
        session_type=session_type,
        ephemeral=ephemeral,
        workspace=workspace,
        image=image,
        session_id=session_id,
    )


async def use_session(run: JobRun, session_id: str) -> Row:
    """The caller's running session, used but not ended by the job."""
    row = await run.sessions.get(run.account_id, session_id)
    await run.save(session_id=session_id, owned=False)
    return row


async def _host_url(run: JobRun, host_id: str) -> str:
    host = await run.sessions.store.run(run.sessions.store.host, host_id)
    if host is None:
        raise errors.Unavailable("the session's host is gone", code="host_gone")
    return str(host["url"])


def command_result(state: dict[str, Any]) -> dict[str, Any]:
    """A finished exec as jobs report it (the output is stored beside it)."""
    return {
        "exit_code": state["exit_code"],
        "timed_out": state["timed_out"],
        "duration_ms": state["duration_ms"],
    }


async def run_command(run: JobRun, session: Row, command: dict[str, Any]) -> dict[str, Any]:
    """Run ``command`` (``command``, ``env``, ``cwd``, ``timeout_ms``) in ``session`` to its end."""
    if session["status"] != "running":
        raise errors.Conflict(f"session {session['id']} is {session['status']}", code="session_not_running")
    url = await _host_url(run, session["host_id"])
    exec_id = str(uuid.uuid4())
    deadline = time.time() + command["timeout_ms"] / 1000 + _SLACK
    await run.save(host_id=session["host_id"], exec_id=exec_id, deadline=deadline, started=True)
    body = {**command, "id": exec_id, "wait_ms": POLL_MS}
    # Not cut off half-way by a cancel: once sent, the exec must be known to be killable.
    with trio.CancelScope(shield=True):
        state = await run.sessions.agents.start_exec(url, session["id"], body, timeout=POLL_MS / 1000 + _SLACK)
    return await _follow(run, url, state)


async def reattach_command(run: JobRun) -> dict[str, Any]:
    """Follow the command a previous worker started, from the checkpoint."""
    url = await _host_url(run, run.checkpoint["host_id"])
    return await _follow(run, url, None)


async def _follow(run: JobRun, url: str, state: dict[str, Any] | None) -> dict[str, Any]:
    """Poll the exec until it ends (or its deadline passes); keep the output published."""
    agents = run.sessions.agents
    session_id, exec_id = run.checkpoint["session_id"], run.checkpoint["exec_id"]
    seen: int | None = None
    remaining = run.checkpoint["deadline"] - time.time()
    with trio.move_on_after(max(remaining, 0.0)) as overdue:
        while True:
            if state is not None:
                if state["status"] == "exited":
                    break
                if state["output"] is not None:
                    await run.publish_output(state["output"], state["output_truncated"])
                seen = state["output_bytes"]
            try:
                state = await agents.poll_exec(
                    url, session_id, exec_id, wait_ms=POLL_MS, seen=seen, timeout=POLL_MS / 1000 + _SLACK
                )
            except errors.NotFound:
                raise errors.Unavailable(
                    f"lost the command: its host no longer knows exec {exec_id} (the host agent restarted or "
                    "the sandbox was destroyed); it may have run, so it is not retried automatically",
                    code="command_lost",
                ) from None
            except (errors.Unavailable, errors.Timeout) as exc:
                log.warning("host did not answer a poll, asking again: %s", exc.message, extra=run.log_context)
                state = None
                await trio.sleep(_UNREACHABLE_PAUSE)
    if overdue.cancelled_caught or state is None:
        raise errors.Timeout("the host did not report the command's end within its timeout", code="host_timeout")
    run.set_output(state["output"], state["output_truncated"])
    try:
        await agents.forget_exec(url, session_id, exec_id)
    except errors.ApiError as exc:  # the host drops it later by itself
        log.info("could not forget exec %s: %s", exec_id, exc.message, extra=run.log_context)
    return command_result(state)


async def cleanup(run: JobRun, *, kill: bool, reason: str) -> dict[str, Any] | None:
    """Kill the attempt's command if asked (its final state returned), then end the session it made."""
    checkpoint = run.checkpoint
    killed = None
    if kill and "exec_id" in checkpoint:
        try:
            url = await _host_url(run, checkpoint["host_id"])
            killed = await run.sessions.agents.kill_exec(url, checkpoint["session_id"], checkpoint["exec_id"])
            run.set_output(killed["output"], killed["output_truncated"])
            await run.sessions.agents.forget_exec(url, checkpoint["session_id"], checkpoint["exec_id"])
        except errors.ApiError as exc:  # gone already; ending its session below ends it anyway
            log.info("could not kill the command: %s", exc.message, extra=run.log_context)
    if checkpoint.get("owned"):
        with contextlib.suppress(errors.NotFound):  # its create failed and left nothing
            await run.sessions.terminate(run.account_id, checkpoint["session_id"], force=True, reason=reason)
    return command_result(killed) if killed is not None else None
