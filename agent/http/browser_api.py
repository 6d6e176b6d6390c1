"""The agent's routes for browser jobs: run CDP calls, or scrape a page, in a browser sandbox.

Spoken by the scheduler's ``browser.action`` and ``browser.scrape`` kinds.
A job's own failure (a CDP call refused, a page that would not load) is an
outcome, answered 200 with ``error`` set; only a sandbox that is not a
running browser is an API error.
"""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from agent.browser.actions import run_actions
from agent.browser.cdp import UNREACHABLE, CdpError, open_cdp
from agent.browser.scrape import scrape
from agent.sandboxes.manager import SandboxManager
from chaser.wire import errors
from chaser.wire.browser_work import CdpCalls, ScrapeRequest
from serving.quart_json import json_response, parse_body


def _browser(manager: SandboxManager, sandbox_id: str) -> None:
    sandbox = manager.get(sandbox_id)
    if sandbox.session_type != "browser":
        raise errors.Conflict(f"session {sandbox_id} is not a browser session", code="not_a_browser")
    if sandbox.status != "running":
        raise errors.Conflict(f"session {sandbox_id} is {sandbox.status}", code="session_not_running")


def _unreachable(exc: BaseException) -> errors.ApiError:
    return errors.Unavailable(f"the session's browser does not answer: {exc}", code="browser_unavailable")


def register_browser_routes(app: QuartTrio, manager: SandboxManager) -> None:
    @app.post("/v1/sandboxes/<sandbox_id>/browser/actions")
    async def browser_actions(sandbox_id: str) -> Response:
        body = await parse_body(CdpCalls)
        _browser(manager, sandbox_id)
        try:
            async with open_cdp(manager.runtime, sandbox_id) as cdp:
                return json_response(await run_actions(cdp, body))
        except UNREACHABLE as exc:
            raise _unreachable(exc) from None

    @app.post("/v1/sandboxes/<sandbox_id>/browser/scrape")
    async def browser_scrape(sandbox_id: str) -> Response:
        body = await parse_body(ScrapeRequest)
        _browser(manager, sandbox_id)
        try:
            async with open_cdp(manager.runtime, sandbox_id) as cdp:
                return json_response(await scrape(cdp, body))
        except (*UNREACHABLE, CdpError) as exc:
            raise _unreachable(exc) from None
