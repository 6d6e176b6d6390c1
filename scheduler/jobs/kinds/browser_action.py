"""``browser.action``: CDP method calls run in order in a browser; the first failing call stops the job.

The browser is a fresh ephemeral one, or, with ``workspace``, the one on
that browser workspace (its profile: cookies, local storage, logins). Each
call goes to the job's page unless it names ``target`` ("browser" or a
target id) or a ``session_id``. The result holds every call's response; a
failure says which step failed and Chromium's reason, with the responses
before it. Calls can have effects on the sites they visit, so an attempt
cut off by a scheduler restart is not run again.
"""

from __future__ import annotations

from pydantic import Field

from chaser.wire.browser_work import CdpCalls
from scheduler.jobs.browser_session import SLACK, end_browser, open_browser
from scheduler.jobs.context import JobRun
from scheduler.jobs.kind import JobKind, Outcome, register
from scheduler.models import Selector


class BrowserActionInput(CdpCalls):
    """CDP calls run in order on an ephemeral browser, or on the browser of a browser workspace."""

    workspace: Selector | None = Field(default=None, description="a browser workspace; absent: an ephemeral browser")


class BrowserAction(JobKind[BrowserActionInput]):
    name = "browser.action"
    description = "Execute sequential CDP method calls"
    scope = "sessions.write"
    read_scope = "sessions.read"
    input_model = BrowserActionInput

    async def run(self, run: JobRun, data: BrowserActionInput) -> Outcome:
        session, url = await open_browser(run, data.workspace)
        await run.save(started=True)
        body = data.model_dump(include={"calls", "timeout_ms"}, exclude_unset=False)
        answer = await run.sessions.agents.browser_actions(url, session["id"], body, data.timeout_ms / 1000 + SLACK)
        result = {"session_id": session["id"], "results": answer["results"]}
        if answer["error"] is not None:
            return Outcome(False, result, answer["error"])
        return Outcome(True, result)

    async def cleanup(self, run: JobRun, data: BrowserActionInput, *, kill: bool) -> None:
        await end_browser(run, kill=kill)


register(BrowserAction())
