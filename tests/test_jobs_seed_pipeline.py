"""The seeds' pipeline example (``npm ci``, ``npm run lint``, ``npm test``) run as written on a real workspace.

Needs the workspaces issue's storage-pool fixtures; on a branch without
them this module is skipped, and ``test_jobs_api`` shows the clear 404.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import System
from tests.jobs_support import submit, wait_for_job
from tests.test_exec_api import curl
from tests.test_jobs_api import CI_PIPELINE

workspace_support = pytest.importorskip("tests.workspace_support")
ok = workspace_support.ok

# A project whose lint and tests pass and need its installed dependency, so
# that the pipeline's steps depend on each other's files. The sandbox has no
# network: the dependency is a local tarball.
PROJECT = r"""
set -e
mkdir -p vendor/left && cd vendor/left
printf '{"name": "left", "version": "1.0.0", "main": "index.js"}' > package.json
echo 'module.exports = s => "<" + s;' > index.js
npm pack --silent >/dev/null && cd ../..
cat > package.json <<'JSON'
{"name": "app", "version": "1.0.0", "dependencies": {"left": "file:vendor/left/left-1.0.0.tgz"},
 "scripts": {"lint": "node -e 'require(\"fs\").readFileSync(\"index.js\")'",
             "test": "node -e 'console.log(require(\"left\")(\"tested\"))'"}}
JSON
echo 'module.exports = 1;' > index.js
npm install --offline --no-audit --no-fund --silent
rm -rf node_modules
"""


async def test_seed_pipeline_runs_on_a_workspace(ws_sqlite_system: System) -> None:
    system = ws_sqlite_system
    ok(await system.client.post("/v1/workspaces", json={"session_type": "sandbox", "name": "ci-project"}), 201)
    setup = await submit(system.client, "sandbox.exec", {"workspace": "ci-project", "command": PROJECT})
    assert (await wait_for_job(system.client, setup["id"], timeout=180))["status"] == "succeeded"

    done = await curl(system, CI_PIPELINE)
    job = json.loads(done.stdout)
    finished = await wait_for_job(system.client, job["id"], timeout=300)
    assert finished["status"] == "succeeded", finished
    steps = finished["result"]["steps"]
    assert [s["status"] for s in steps] == ["succeeded"] * 3
    assert "<tested" in steps[2]["output"]  # npm test used what npm ci installed, in the same filesystem
    # The workspace keeps what the pipeline wrote; its session was ended.
    again = await submit(system.client, "sandbox.exec", {"workspace": "ci-project", "command": "ls node_modules"})
    assert (await wait_for_job(system.client, again["id"]))["output"] == "left\n"
    sessions = ok(await system.client.get("/v1/sessions"))["sessions"]
    assert all(s["status"] == "terminated" for s in sessions)
