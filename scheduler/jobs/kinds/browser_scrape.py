"""``browser.scrape``: load a URL in a fresh browser, wait, and extract what a selector matches.

The result has the HTTP status of the main document, the final URL (after
redirects), the title, and per matched element its text and/or HTML (the
whole page without a selector); a PNG screenshot in base64 if asked. A page
that cannot be loaded, a selector the browser rejects, or a page that does
not load in time fails the job with that reason. Scraping only reads, so an
attempt cut off by a scheduler restart is simply run again.
"""

from __future__ import annotations

from pydantic import Field

from chaser.wire.browser_work import ScrapeRequest
from scheduler.jobs.browser_session import SLACK, end_browser, open_browser
from scheduler.jobs.context import JobRun
from scheduler.jobs.kind import JobKind, Outcome, register
from scheduler.models import Selector


class BrowserScrapeInput(ScrapeRequest):
    """A page to load and what to extract from it; in an ephemeral browser, or a browser workspace's."""

    workspace: Selector | None = Field(default=None, description="a browser workspace; absent: an ephemeral browser")


class BrowserScrape(JobKind[BrowserScrapeInput]):
    name = "browser.scrape"
    description = "Navigate to a URL and optionally extract content"
    scope = "sessions.write"
    read_scope = "sessions.read"
    input_model = BrowserScrapeInput

    async def run(self, run: JobRun, data: BrowserScrapeInput) -> Outcome:
        session, url = await open_browser(run, data.workspace)
        body = data.model_dump(exclude={"workspace"})
        answer = await run.sessions.agents.browser_scrape(url, session["id"], body, data.timeout_ms / 1000 + SLACK)
        if answer["error"] is not None:
            return Outcome(False, {"session_id": session["id"], "url": data.url}, answer["error"])
        return Outcome(True, {"session_id": session["id"], **answer["result"]})

    async def cleanup(self, run: JobRun, data: BrowserScrapeInput, *, kill: bool) -> None:
        await end_browser(run, kill=kill)


register(BrowserScrape())
