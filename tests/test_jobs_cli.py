"""``chaser jobs``: the seeds' CLI lines as written (image ``default``), exit codes, progress on a terminal."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import trio

from tests.conftest import System
from tests.test_cli import CHASER, free_port

SEED_LINES = f"""
# Direct exec
{CHASER} jobs exec --ephemeral --image default \\
  "npm ci && npm test" --wait --json > ci.json; echo "ci=$?"

# On a persistent workspace (for cached dependencies)
{CHASER} jobs exec --workspace ci-project "npm test" --wait --json > workspace.json; echo "workspace=$?"

{CHASER} jobs exec --workspace my-project "npm test" --wait --json > my-project.json; echo "my-project=$?"
{CHASER} jobs exec --ephemeral --image default "node -v" --wait --json > node.json; echo "node=$?"
{CHASER} jobs kinds --json > kinds.json; echo "kinds=$?"
"""


def test_seed_cli_lines_in_embedded_mode(tmp_path: Path, images_dir: Path) -> None:
    state = tmp_path / "embedded"
    up = f"{CHASER} up --detach --state-dir {state} --images-dir {images_dir} --port {free_port()}"
    script = f'set -uo pipefail\ncd {tmp_path}\neval "$({up})"\n{SEED_LINES}'
    try:
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
    finally:
        down = subprocess.run([CHASER, "down", "--state-dir", str(state)], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert done.returncode == 0, done.stderr
    codes = dict(line.split("=") for line in done.stdout.split())
    jobs = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in codes}

    ci = jobs["ci"]  # npm ran: no project there, so `npm ci` fails, and so does the CLI, with its code
    assert ci["status"] == "failed" and "package-lock.json" in ci["output"]
    assert int(codes["ci"]) == ci["result"]["exit_code"] != 0
    for name in ("workspace", "my-project"):  # no workspaces yet: a clear failure, exit 1
        assert jobs[name]["error"]["code"] == "workspace_not_found" and codes[name] == "1"
    assert jobs["node"]["status"] == "succeeded" and jobs["node"]["output"].startswith("v18.")
    assert codes["node"] == "0"
    assert codes["kinds"] == "0" and "sandbox.exec" in {k["kind"] for k in jobs["kinds"]["kinds"]}
    assert done.stderr == ""  # not a terminal: no progress lines
    assert list((state / "agent" / "lxc").iterdir()) == []


async def chaser(system: System, *args: str, stderr: int | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "CHASER_API_URL": system.api_url, "CHASER_API_KEY": system.api_key}
    where = {"capture_stderr": True} if stderr is None else {"stderr": stderr}
    return await trio.run_process([CHASER, *args], env=env, capture_stdout=True, check=False, **where)


async def test_manage_jobs_from_the_cli(sqlite_system: System) -> None:
    system = sqlite_system
    failing = await chaser(system, "jobs", "exec", "--ephemeral", "echo hi; exit 3", "--wait")
    assert failing.returncode == 3 and failing.stdout == b"hi\n"
    assert b"command_failed" not in failing.stderr and b"exited with code 3" in failing.stderr

    queued = await chaser(system, "jobs", "exec", "--ephemeral", "--env", "A=b", "echo $A; sleep 300")
    job_id = queued.stdout.decode().strip()
    assert queued.returncode == 0 and len(job_id) == 36
    listed = await chaser(system, "jobs", "list", "--kind", "sandbox.exec")
    assert job_id in listed.stdout.decode()
    got = json.loads((await chaser(system, "jobs", "get", job_id)).stdout)
    assert got["id"] == job_id and got["input"]["env"] == {"A": "b"}
    canceled = json.loads((await chaser(system, "jobs", "cancel", job_id, "--json")).stdout)
    assert canceled["status"] == "canceled"
    again = await chaser(system, "jobs", "cancel", job_id)
    assert again.returncode == 1 and b"job_finished" in again.stderr

    [failed] = json.loads((await chaser(system, "jobs", "list", "--status", "failed", "--json")).stdout)["jobs"]
    retried = await chaser(system, "jobs", "retry", failed["id"], "--wait", "--json")
    assert retried.returncode == 3 and json.loads(retried.stdout)["attempt"] == 2
    kinds = await chaser(system, "jobs", "kinds")
    assert b"pipeline.run" in kinds.stdout and b"exec.write" in kinds.stdout
    assert system.containers() == set()


async def test_wait_shows_progress_on_a_terminal(sqlite_system: System) -> None:
    main, terminal = os.openpty()
    try:
        command = ("jobs", "exec", "--ephemeral", "sleep 1; echo x", "--wait")
        done = await chaser(sqlite_system, *command, stderr=terminal)
        os.close(terminal)
        terminal = -1
        shown = b""
        while chunk := await trio.to_thread.run_sync(_read_or_eof, main):
            shown += chunk
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(main)
    assert done.returncode == 0 and done.stdout == b"x\n"
    lines = shown.decode().replace("\r", "").splitlines()
    assert len({line.split(":")[0] for line in lines}) == 1 and lines[0].startswith("job ")  # one job's lines
    assert any(line.endswith(": running (attempt 1)") for line in lines)
    assert ": succeeded after " in lines[-1]


def _read_or_eof(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the terminal's other side is closed and drained
        return b""
