"""Browser sessions for real: Chromium in an LXC session, running only once DevTools answers.

Reached here from inside the session itself (``curl`` to its loopback),
since the session's DevTools port is on the session's loopback only.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.conftest import System, wait_until


async def create(system: System, **fields: Any) -> dict[str, Any]:
    response = await system.client.post("/v1/sessions", json={"session_type": "browser", **fields})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def run(system: System, session_id: str, command: str) -> dict[str, Any]:
    response = await system.client.post("/v1/exec", json={"session_id": session_id, "command": command})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_browser_session_is_running_once_devtools_answers(browser_system: System) -> None:
    session = await create(browser_system, ephemeral=True)
    assert session["status"] == "running" and session["session_type"] == "browser"
    # Created means ready: DevTools answers at once, from inside the session.
    answer = await run(browser_system, session["id"], "curl -sS --max-time 5 http://127.0.0.1:9222/json/version")
    assert answer["exit_code"] == 0, answer
    version = json.loads(answer["output"])
    assert version["Browser"].startswith(("Chrome/", "HeadlessChrome/"))
    assert version["webSocketDebuggerUrl"].startswith("ws://127.0.0.1:9222/devtools/browser/")
    ended = await browser_system.client.delete(f"/v1/sessions/{session['id']}")
    assert ended.status_code == 200 and ended.json()["status"] == "terminated"


async def test_chromium_crash_ends_the_session_with_the_reason(browser_system: System) -> None:
    session = await create(browser_system, ephemeral=True)
    # The browser process itself (the oldest chromium), killed as a crash would.
    await run(browser_system, session["id"], "pkill -KILL -o chromium")

    async def ended() -> bool:
        row = (await browser_system.client.get(f"/v1/sessions/{session['id']}")).json()
        return bool(row["status"] == "terminated")

    await wait_until(ended, timeout=30)
    row = (await browser_system.client.get(f"/v1/sessions/{session['id']}")).json()
    assert row["status_reason"].startswith("the browser exited unexpectedly"), row


async def test_browser_sessions_take_no_image_and_refuse_sandbox_workspaces(browser_system: System) -> None:
    refused = await browser_system.client.post(
        "/v1/sessions", json={"session_type": "browser", "ephemeral": True, "image": "browser"}
    )
    assert refused.status_code == 422 and "browser sessions do not accept image" in refused.text


async def test_agent_browser_routes_refuse_what_is_no_running_browser(browser_system: System) -> None:
    sandbox = (await browser_system.client.post("/v1/sessions", json={"ephemeral": True})).json()
    headers = {"Authorization": f"Bearer {browser_system.token}"}
    calls = {"calls": [{"method": "Browser.getVersion", "target": "browser"}]}
    async with httpx.AsyncClient(base_url=browser_system.agent.url, headers=headers) as agent:
        not_browser = await agent.post(f"/v1/sandboxes/{sandbox['id']}/browser/actions", json=calls)
        assert not_browser.status_code == 409 and not_browser.json()["error"]["code"] == "not_a_browser"
        missing = await agent.post(f"/v1/sandboxes/{uuid.uuid4()}/browser/scrape", json={"url": "http://x.test/"})
        assert missing.status_code == 404
        bad = await agent.post(f"/v1/sandboxes/{sandbox['id']}/browser/scrape", json={"url": "file:///etc/passwd"})
        assert bad.status_code == 422
    await browser_system.client.delete(f"/v1/sessions/{sandbox['id']}")
