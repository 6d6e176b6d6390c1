"""browser.scrape and browser.action jobs, run for real in Chromium against the test site.

The site lives in a test-made namespace (``tests/browser_support.py``); the
seeds' scrape example runs as written but for its URL.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from tests.browser_support import SITE, UNREACHABLE
from tests.conftest import System
from tests.jobs_support import submit, wait_for_job
from tests.test_exec_api import curl
from tests.test_jobs_cli import chaser

# The seeds' "Browser scrape" example, pointed at the test site.
SEEDS_SCRAPE = f"""
curl -sS "$CHASER_API_URL/v1/jobs" \\
  -H "Authorization: Bearer $CHASER_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{{
    "kind": "browser.scrape",
    "input": {{"url": "{SITE}/", "selector": "h1"}}
  }}' | jq
"""


async def run_job(system: System, kind: str, job_input: dict[str, Any]) -> dict[str, Any]:
    job = await submit(system.client, kind, job_input)
    return await wait_for_job(system.client, job["id"], timeout=120)


async def no_sessions_left(system: System) -> None:
    sessions = (await system.client.get("/v1/sessions", params={"status": "running"})).json()["sessions"]
    assert sessions == []
    assert system.containers() == set()


async def test_seeds_scrape_example_returns_the_h1(browser_system: System) -> None:
    done = await curl(browser_system, SEEDS_SCRAPE)
    assert done.returncode == 0, done.stderr
    job = await wait_for_job(browser_system.client, json.loads(done.stdout)["id"], timeout=120)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["status"] == 200 and result["url"] == f"{SITE}/" and result["title"] == "Chaser test page"
    assert result["matches"] == [{"text": "Hello from the test world"}]
    await no_sessions_left(browser_system)


async def test_scrape_options(browser_system: System) -> None:
    job = await run_job(
        browser_system,
        "browser.scrape",
        {"url": f"{SITE}/moved", "selector": "li.item", "formats": ["text", "html"], "screenshot": True},
    )
    assert job["status"] == "succeeded", job
    result = job["result"]
    # Followed the redirect: the final URL and the status of the page it led to.
    assert result["url"] == f"{SITE}/" and result["status"] == 200
    assert result["matches"] == [
        {"text": "first", "html": '<li class="item">first</li>'},
        {"text": "second", "html": '<li class="item">second</li>'},
    ]
    png = base64.b64decode(result["screenshot"]["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 100 and height > 100

    whole = await run_job(browser_system, "browser.scrape", {"url": f"{SITE}/missing", "formats": ["html"]})
    assert whole["status"] == "succeeded", whole
    assert whole["result"]["status"] == 404 and "<h1>404</h1>" in whole["result"]["content"]["html"]

    late = await run_job(
        browser_system, "browser.scrape", {"url": f"{SITE}/late", "selector": "#late", "wait_for_selector": True}
    )
    assert late["result"]["matches"] == [{"text": "arrived"}]
    await no_sessions_left(browser_system)


async def test_scrape_failures_are_clear(browser_system: System) -> None:
    unreachable = await run_job(browser_system, "browser.scrape", {"url": UNREACHABLE})
    assert unreachable["status"] == "failed"
    assert unreachable["error"]["code"] == "navigation_failed"
    assert "ERR_CONNECTION_REFUSED" in unreachable["error"]["message"]

    bad_selector = await run_job(browser_system, "browser.scrape", {"url": f"{SITE}/", "selector": "h1["})
    assert bad_selector["status"] == "failed" and bad_selector["error"]["code"] == "invalid_selector"
    assert "is not a valid selector" in bad_selector["error"]["message"]

    never = await run_job(
        browser_system,
        "browser.scrape",
        {"url": f"{SITE}/", "selector": "#never", "wait_for_selector": True, "timeout_ms": 1000},
    )
    assert never["status"] == "failed" and never["error"]["code"] == "scrape_timed_out"
    await no_sessions_left(browser_system)


def navigate(url: str) -> dict[str, Any]:
    return {"method": "Page.navigate", "params": {"url": url}}


def evaluate(expression: str) -> dict[str, Any]:
    return {"method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": True}}


def wait_for(condition: str) -> dict[str, Any]:
    """A call that returns once ``condition`` holds in the page (navigation returns at commit)."""
    expression = f"new Promise(r => {{ const t = () => ({condition}) ? r(1) : setTimeout(t, 20); t(); }})"
    return {"method": "Runtime.evaluate", "params": {"expression": expression, "awaitPromise": True}}


async def test_action_runs_calls_in_order_and_reports_each(browser_system: System) -> None:
    calls = [
        {"method": "Page.enable"},
        navigate(f"{SITE}/"),
        wait_for("window.clicks === 0"),
        evaluate("document.getElementById('go').click(); document.getElementById('go').click()"),
        evaluate("document.getElementById('out').textContent"),
        {"method": "Browser.getVersion", "target": "browser"},
    ]
    job = await run_job(browser_system, "browser.action", {"calls": calls})
    assert job["status"] == "succeeded", job
    results = job["result"]["results"]
    assert [r["method"] for r in results] == [c["method"] for c in calls]
    assert results[1]["result"]["frameId"]
    assert results[4]["result"]["result"]["value"] == "clicked 2"
    assert "Chrome" in results[5]["result"]["product"]
    await no_sessions_left(browser_system)


async def test_failing_call_stops_the_job_naming_the_step(browser_system: System) -> None:
    calls = [evaluate("1 + 1"), {"method": "Page.doesNotExist"}, evaluate("2 + 2")]
    job = await run_job(browser_system, "browser.action", {"calls": calls})
    assert job["status"] == "failed"
    error = job["error"]
    assert error["code"] == "step_failed" and error["step"] == 1 and error["method"] == "Page.doesNotExist"
    assert "Page.doesNotExist" in error["message"] and "wasn't found" in error["message"]
    assert [r["result"]["result"]["value"] for r in job["result"]["results"]] == [2]  # step 2 never ran

    unknown_target = await run_job(browser_system, "browser.action", {"calls": [{**evaluate("1"), "target": "nope"}]})
    assert unknown_target["status"] == "failed" and unknown_target["error"]["step"] == 0
    await no_sessions_left(browser_system)


async def test_bad_input_is_refused_with_the_schema(browser_system: System) -> None:
    kinds = (await browser_system.client.get("/v1/jobs/kinds")).json()
    schemas = {k["kind"]: k["input_schema"] for k in kinds["kinds"]}
    assert "calls" in schemas["browser.action"]["properties"]
    assert schemas["browser.scrape"]["required"] == ["url"]
    for kind, bad in (
        ("browser.scrape", {"selector": "h1"}),
        ("browser.scrape", {"url": "ftp://example.test/"}),
        ("browser.scrape", {"url": f"{SITE}/", "formats": ["pdf"]}),
        ("browser.action", {"calls": []}),
        ("browser.action", {"calls": [{"method": "not a method"}]}),
        ("browser.action", {"calls": [{"method": "Page.navigate", "params": "x"}]}),
    ):
        response = await browser_system.client.post("/v1/jobs", json={"kind": kind, "input": bad})
        assert response.status_code == 422, (kind, bad, response.text)
        assert response.json()["error"]["code"] == "invalid_request", response.text


async def test_profile_persists_on_a_browser_workspace(ws_browser_system: System) -> None:
    system = ws_browser_system
    created = await system.client.post("/v1/workspaces", json={"name": "profile", "session_type": "browser"})
    assert created.status_code == 201, created.text
    remember = [
        {"method": "Page.enable"},
        navigate(f"{SITE}/remember?value=kept"),
        wait_for("localStorage.getItem('remembered')"),
    ]
    first = await run_job(system, "browser.action", {"workspace": "profile", "calls": remember})
    assert first["status"] == "succeeded", first

    # A new session on the same workspace: the cookie and local storage are still there.
    recall = [
        {"method": "Network.getCookies", "params": {"urls": [f"{SITE}/"]}},
        navigate(f"{SITE}/recall"),
        wait_for("document.querySelector('h1')"),
        evaluate("[document.querySelector('h1').textContent, localStorage.getItem('remembered')]"),
    ]
    second = await run_job(system, "browser.action", {"workspace": "profile", "calls": recall})
    assert second["status"] == "succeeded", second
    assert second["result"]["session_id"] != first["result"]["session_id"]
    cookies = second["result"]["results"][0]["result"]["cookies"]
    assert [(c["name"], c["value"]) for c in cookies] == [("remembered", "kept")]
    assert second["result"]["results"][3]["result"]["result"]["value"] == ["kept", "kept"]

    # An ephemeral browser has none of it.
    fresh = await run_job(system, "browser.action", {"calls": [recall[0]]})
    assert fresh["result"]["results"][0]["result"]["cookies"] == []
    await no_sessions_left(system)


async def test_cli_scrape_as_in_the_seeds(browser_system: System) -> None:
    # The seeds' line, `chaser jobs scrape --url "https://example.com" --wait --json`, on the test site.
    done = await chaser(browser_system, "jobs", "scrape", "--url", f"{SITE}/", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["kind"] == "browser.scrape" and job["status"] == "succeeded"
    assert "Hello from the test world" in job["result"]["content"]["text"]

    plain = await chaser(browser_system, "jobs", "scrape", "--url", f"{SITE}/", "--selector", "li", "--wait")
    assert plain.returncode == 0 and plain.stdout.decode().splitlines() == ["first", "second"]

    failed = await chaser(browser_system, "jobs", "scrape", "--url", UNREACHABLE, "--wait")
    assert failed.returncode == 1 and "ERR_CONNECTION_REFUSED" in failed.stderr.decode()
