"""``chaser workspaces ...`` as a shell script uses it, against the real system."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.conftest import System
from tests.gitserver import GitHost
from tests.workspace_support import start_workspace_system, stop_workspace_system

CHASER = str(Path(sys.executable).parent / "chaser")

SCRIPT = """
set -euo pipefail
ws() { chaser workspaces "$@"; }
ws --json create base | jq -r .name
chaser exec --workspace base "echo v1 > version"
snap=$(ws --json snapshot base --name first | jq -r .id)
ws snapshots base | grep -c "$snap.*first"
ws --json restore base "$snap" | jq -r .name
ws --json update base --template | jq -r .is_template
ws --json clone base copy --snapshot "$snap" | jq -r .cloned_from.snapshot | grep -c "$snap"
ws --json import acme/app --ref main --token-env REPO_TOKEN | jq -r .source.repository
ws --json bootstrap app --token-env REPO_TOKEN | jq -r .status
ws delete-snapshot base "$snap"
ws delete copy
ws list | awk '{print $1}' | paste -sd,
chaser exec --workspace app "cat README"
ws get copy 2>&1 || echo "exit=$?"
ws import acme/app --token-env NOT_SET 2>&1 || echo "exit=$?"
"""


@pytest.fixture
async def cli_system(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, pool: Path, git_server: GitHost
) -> AsyncIterator[System]:
    system = await start_workspace_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", pool, git=git_server
    )
    try:
        yield system
    finally:
        await stop_workspace_system(system, pool)


async def test_workspaces_cli(cli_system: System, git_server: GitHost) -> None:
    git_server.create("acme/app", {"README": "from git\n"}, token="tok-123")
    env = {
        **os.environ,
        "PATH": f"{Path(CHASER).parent}:{os.environ['PATH']}",
        "CHASER_API_URL": cli_system.api_url,
        "CHASER_API_KEY": cli_system.api_key,
        "REPO_TOKEN": "tok-123",
    }
    done = await trio.run_process(
        ["bash", "-c", SCRIPT], env=env, capture_stdout=True, capture_stderr=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == [
        "base",
        "1",
        "base",
        "true",
        "1",
        "acme/app",
        "ready",
        "app,base",
        "from git",
        "chaser: workspace_not_found: workspace 'copy' not found",
        "exit=1",
        "chaser: --token-env NOT_SET: that environment variable is not set",
        "exit=2",
    ]
