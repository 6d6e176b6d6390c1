"""``browser.action`` on the agent: CDP calls in order; the first failure stops the rest.

The result lists each call's answer; a failure names its step (0-based),
its method and Chromium's reason, with the answers before it kept.
"""

from __future__ import annotations

from typing import Any

import trio

from agent.browser.cdp import CdpConnection, CdpError
from agent.browser.targets import Targets
from chaser.wire.browser_work import CdpCalls


async def run_actions(cdp: CdpConnection, work: CdpCalls) -> dict[str, Any]:
    """``{"results": [...], "error": None}``, or with the failing step's error."""
    targets = Targets(cdp)
    results: list[dict[str, Any]] = []
    step = 0
    with trio.move_on_after(work.timeout_ms / 1000) as deadline:
        for step, call in enumerate(work.calls):
            try:
                session = call.session_id or await targets.session_for(call.target)
                answer = await cdp.call(call.method, call.params, session)
            except CdpError as exc:
                return {"results": results, "error": _step_error(step, call.method, "cdp_error", exc.message, exc.code)}
            results.append({"method": call.method, "result": answer})
    if deadline.cancelled_caught:
        method = work.calls[step].method
        message = f"the calls did not finish within {work.timeout_ms} ms"
        return {"results": results, "error": _step_error(step, method, "timeout", message)}
    return {"results": results, "error": None}


def _step_error(step: int, method: str, code: str, reason: str, cdp_code: int | None = None) -> dict[str, Any]:
    return {
        "code": "step_failed" if code == "cdp_error" else "step_timed_out",
        "message": f"step {step} ({method}) failed: {reason}",
        "step": step,
        "method": method,
        "cdp_code": cdp_code,
    }
