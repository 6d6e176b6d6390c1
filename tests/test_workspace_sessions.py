"""Sessions on workspaces: files survive, one session at a time, the disk's host, the type lock."""

from __future__ import annotations

import json
import os

import trio

from tests.conftest import System
from tests.workspace_support import exec_on, ok


async def test_files_survive_terminate(ws_system: System) -> None:
    created = ok(
        await ws_system.client.post("/v1/workspaces", json={"session_type": "sandbox", "name": "my-project"}), 201
    )
    assert created["name"] == "my-project" and created["status"] == "ready" and created["image"] == "default"
    first = ok(await ws_system.client.post("/v1/sessions", json={"workspace": "my-project"}), 201)
    assert first["workspace"] == created["id"] and first["image"] == "default"
    wrote = await exec_on(
        ws_system, {"session_id": first["id"]}, "pwd; echo kept > note; df --output=target . | tail -1"
    )
    assert wrote["exit_code"] == 0, wrote
    assert wrote["output"] == "/workspace\n/workspace\n"
    ok(await ws_system.client.delete(f"/v1/sessions/{first['id']}"))

    second = ok(await ws_system.client.post("/v1/sessions", json={"workspace": created["id"]}), 201)
    read = await exec_on(ws_system, {"session_id": second["id"]}, "cat /workspace/note")
    assert read["output"] == "kept\n"
    ok(await ws_system.client.delete(f"/v1/sessions/{second['id']}"))


# The seeds' CI pattern ("When to use workspaces in CI"): dependencies
# installed in a workspace are there for the next run. The sandbox has no
# network, so the dependency is a local tarball; `npm ci` is the real one.
CI_SETUP = r"""
set -e
mkdir -p vendor/left && cd vendor/left
printf '{"name": "left", "version": "1.0.0", "main": "index.js"}' > package.json
echo 'module.exports = s => "<" + s;' > index.js
npm pack --silent >/dev/null && cd ../..
printf '{"name": "app", "version": "1.0.0", "dependencies": {"left": "file:vendor/left/left-1.0.0.tgz"}}' > package.json
npm install --offline --no-audit --no-fund --silent
rm -rf node_modules
echo 'console.log(require("left")("cached"))' > check.js
"""

# Each line is the seeds' curl example with a body of ours.
CI_SCRIPT = """
set -euo pipefail
api() { curl -sS "$CHASER_API_URL$1" -H "Authorization: Bearer $CHASER_API_KEY" \\
  -H "Content-Type: application/json" -d "$2"; }
api /v1/workspaces '{"session_type": "sandbox", "name": "ci-project"}' | jq -r .name
api /v1/exec "$SETUP" | jq -r .exit_code
api /v1/exec "$INSTALL" | jq -r .output
api /v1/exec '{"workspace": "ci-project", "command": "node check.js"}' | jq -r .output
"""


def _exec_body(command: str) -> str:
    return json.dumps({"workspace": "ci-project", "command": command, "timeout_ms": 900000})


async def test_ci_dependency_cache_survives_sessions(ws_sqlite_system: System) -> None:
    env = {
        **os.environ,
        "CHASER_API_URL": ws_sqlite_system.api_url,
        "CHASER_API_KEY": ws_sqlite_system.api_key,
        "SETUP": _exec_body(CI_SETUP),
        "INSTALL": _exec_body("npm ci --offline --no-audit --no-fund --silent && ls node_modules"),
    }
    done = await trio.run_process(
        ["bash", "-c", CI_SCRIPT], env=env, capture_stdout=True, capture_stderr=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["ci-project", "0", "left", "", "<cached", ""]
    sessions = ok(await ws_sqlite_system.client.get("/v1/sessions"))["sessions"]
    assert len(sessions) == 3 and all(s["status"] == "terminated" for s in sessions)


async def test_one_session_at_a_time(ws_system: System) -> None:
    ok(await ws_system.client.post("/v1/workspaces", json={"name": "Shared"}), 201)
    holder = ok(await ws_system.client.post("/v1/sessions", json={"workspace": "shared"}), 201)
    second = await ws_system.client.post("/v1/sessions", json={"workspace": "SHARED"})
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "workspace_in_use"
    assert holder["id"] in second.json()["error"]["message"]
    workspace = ok(await ws_system.client.get("/v1/workspaces/shared"))
    assert workspace["attached_session"] == holder["id"]

    # exec naming the workspace runs in the session that holds it
    ran = await exec_on(ws_system, {"workspace": "shared"}, "echo $PWD")
    assert ran["session_id"] == holder["id"] and ran["output"] == "/workspace\n"

    ok(await ws_system.client.delete(f"/v1/sessions/{holder['id']}"))
    assert ok(await ws_system.client.get("/v1/workspaces/shared"))["attached_session"] is None
    third = ok(await ws_system.client.post("/v1/sessions", json={"workspace": "shared"}), 201)
    ok(await ws_system.client.delete(f"/v1/sessions/{third['id']}"))
    listed = ok(await ws_system.client.get("/v1/sessions"))["sessions"]
    assert len(listed) == 2  # the refused one left no row


async def test_concurrent_sessions_race_for_one_workspace(ws_sqlite_system: System) -> None:
    system = ws_sqlite_system
    ok(await system.client.post("/v1/workspaces", json={"name": "contended"}), 201)
    statuses: list[int] = []

    async def attempt() -> None:
        statuses.append((await system.client.post("/v1/sessions", json={"workspace": "contended"})).status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(attempt)
    assert sorted(statuses) == [201, 409, 409, 409]
    [running] = ok(await system.client.get("/v1/sessions", params={"status": "running"}))["sessions"]
    ok(await system.client.delete(f"/v1/sessions/{running['id']}"))


async def test_workspace_is_locked_to_its_session_type(ws_system: System) -> None:
    ok(await ws_system.client.post("/v1/workspaces", json={"name": "code"}), 201)
    browser = ok(await ws_system.client.post("/v1/workspaces", json={"session_type": "browser", "name": "web"}), 201)
    assert browser["session_type"] == "browser" and browser["image"] is None

    mismatch = await ws_system.client.post("/v1/sessions", json={"session_type": "browser", "workspace": "code"})
    assert mismatch.status_code == 422
    assert mismatch.json()["error"]["code"] == "session_type_mismatch"
    mismatch = await ws_system.client.post("/v1/sessions", json={"session_type": "sandbox", "workspace": "web"})
    assert mismatch.status_code == 422
    # The right type is accepted: a browser runs on the browser workspace.
    session = ok(await ws_system.client.post("/v1/sessions", json={"session_type": "browser", "workspace": "web"}), 201)
    assert session["status"] == "running" and session["workspace"] == browser["id"]
    ok(await ws_system.client.delete(f"/v1/sessions/{session['id']}"))
