"""``browser.scrape`` on the agent: load a page in a new tab, wait, extract, close the tab.

The HTTP status and final URL come from the main document's
``Network.responseReceived`` (after redirects); text and HTML are read in
the page by one ``Runtime.evaluate``, so an invalid selector is reported as
the browser's own SyntaxError.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import trio

from agent.browser.cdp import CdpConnection, CdpError, Event
from agent.browser.targets import Targets
from chaser.wire.browser_work import ScrapeRequest

_WAIT_EVENTS = {
    "load": ("Page.loadEventFired", None),
    "domcontentloaded": ("Page.domContentEventFired", None),
    "networkidle": ("Page.lifecycleEvent", "networkIdle"),
}
_SELECTOR_POLL = 0.1

_EXTRACT = """
((selector, formats) => {
  const pick = (el) => {
    const out = {};
    if (formats.includes("text")) out.text = el.innerText ?? el.textContent;
    if (formats.includes("html")) out.html = el.outerHTML;
    return out;
  };
  const page = {title: document.title, url: location.href};
  if (selector === null) page.content = pick(document.documentElement);
  else page.matches = Array.from(document.querySelectorAll(selector), pick);
  return page;
})(%s, %s)
"""


class ScrapeFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def scrape(cdp: CdpConnection, work: ScrapeRequest) -> dict[str, Any]:
    """``{"result": {...}, "error": None}``, or ``result`` None and the reason."""
    targets = Targets(cdp)
    target_id = await targets.new_page()
    try:
        session = await targets.session_for(target_id)
        assert session is not None
        with trio.move_on_after(work.timeout_ms / 1000) as deadline:
            result = await _scrape_in(cdp, session, work)
        if deadline.cancelled_caught:
            raise ScrapeFailed("scrape_timed_out", f"{work.url} did not finish loading within {work.timeout_ms} ms")
        return {"result": result, "error": None}
    except ScrapeFailed as exc:
        return {"result": None, "error": {"code": exc.code, "message": exc.message}}
    except CdpError as exc:
        return {"result": None, "error": {"code": "browser_error", "message": str(exc)}}
    finally:
        # If the browser is gone, there is nothing left to close.
        with trio.CancelScope(shield=True), trio.move_on_after(5), contextlib.suppress(CdpError):
            await cdp.call("Target.closeTarget", {"targetId": target_id})


async def _scrape_in(cdp: CdpConnection, session: str, work: ScrapeRequest) -> dict[str, Any]:
    await cdp.call("Page.enable", session_id=session)
    await cdp.call("Network.enable", session_id=session)
    if work.wait_until == "networkidle":
        await cdp.call("Page.setLifecycleEventsEnabled", {"enabled": True}, session_id=session)
    with cdp.subscribe() as events:
        navigated = await cdp.call("Page.navigate", {"url": work.url}, session_id=session)
        if navigated.get("errorText"):
            raise ScrapeFailed("navigation_failed", f"could not load {work.url}: {navigated['errorText']}")
        document = await _wait_loaded(events, session, navigated, work.wait_until)
    if work.wait_for_selector and work.selector is not None:
        await _wait_for_selector(cdp, session, work.selector)
    page = await _evaluate(cdp, session, _EXTRACT % (json.dumps(work.selector), json.dumps(work.formats)))
    result: dict[str, Any] = {
        "status": document.get("status") if document else None,
        "url": page["url"],
        "title": page["title"],
    }
    if work.selector is None:
        result["content"] = page["content"]
    else:
        result["selector"] = work.selector
        result["matches"] = page["matches"]
    if work.screenshot:
        shot = await cdp.call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": work.full_page}, session_id=session
        )
        result["screenshot"] = {"format": "png", "encoding": "base64", "data": shot["data"]}
    return result


async def _wait_loaded(
    events: trio.MemoryReceiveChannel[Event], session: str, navigated: dict[str, Any], wait_until: str
) -> dict[str, Any] | None:
    """Wait for the page's wait condition; the main document's response, if one was seen."""
    wanted, lifecycle_name = _WAIT_EVENTS[wait_until]
    loader = navigated.get("loaderId")
    document: dict[str, Any] | None = None
    async for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event["method"], event.get("params", {})
        ours = params.get("loaderId") == loader
        if method == "Network.responseReceived" and params.get("type") == "Document" and ours:
            document = params["response"]
        elif method == wanted and (lifecycle_name is None or (params.get("name") == lifecycle_name and ours)):
            return document
    raise CdpError("Page.navigate", "the browser connection closed while the page loaded")


async def _wait_for_selector(cdp: CdpConnection, session: str, selector: str) -> None:
    while not await _evaluate(cdp, session, f"document.querySelector({json.dumps(selector)}) !== null"):
        await trio.sleep(_SELECTOR_POLL)


async def _evaluate(cdp: CdpConnection, session: str, expression: str) -> Any:
    answer = await cdp.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session_id=session)
    if "exceptionDetails" in answer:
        details = answer["exceptionDetails"]
        description = details.get("exception", {}).get("description") or details.get("text", "error")
        first_line = str(description).splitlines()[0]
        if "is not a valid selector" in first_line:
            raise ScrapeFailed("invalid_selector", first_line)
        raise ScrapeFailed("extraction_failed", first_line)
    return answer["result"].get("value")
