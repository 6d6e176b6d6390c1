"""The browser a browser job works in: a fresh ephemeral one, or the one on a browser workspace.

Either way the job starts the session and ``commands.cleanup`` ends it
(its id is checkpointed before it exists), so a browser job never shares a
browser with a client: a workspace is attached to one session at a time.
"""

from __future__ import annotations

from chaser.wire import errors
from scheduler.jobs import commands
from scheduler.jobs.context import JobRun
from scheduler.store import Row

# How long past the job's own timeout the host may take to answer.
SLACK = 30.0


async def open_browser(run: JobRun, workspace: str | None) -> tuple[Row, str]:
    """The job's new browser session, and the URL of the host running it."""
    session = await commands.open_session(
        run, ephemeral=workspace is None, workspace=workspace, image=None, session_type="browser"
    )
    host = await run.sessions.store.run(run.sessions.store.host, session["host_id"])
    if host is None:
        raise errors.Unavailable("the session's host is gone", code="host_gone")
    return session, str(host["url"])


async def end_browser(run: JobRun, *, kill: bool) -> None:
    await commands.cleanup(run, kill=False, reason="its job was canceled" if kill else "its job ended")
