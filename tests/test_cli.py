"""The embedded mode as a newcomer uses it: eval "$(chaser up --detach)", then down."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import lxc

CHASER = str(Path(sys.executable).parent / "chaser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_up_exec_down(tmp_path: Path, images_dir: Path) -> None:
    state = tmp_path / "embedded"
    up = f"{CHASER} up --detach --state-dir {state} --images-dir {images_dir} --port {free_port()}"
    script = f"""
        set -euo pipefail
        eval "$({up})"
        {CHASER} exec --ephemeral --image default "echo hello from \\$(hostname)"
        {CHASER} exec --ephemeral "exit 3" || echo "exit=$?"
        id=$({CHASER} sessions --json create --ephemeral | jq -r .id)
        {CHASER} sessions list | grep "$id.*running" >/dev/null
        # Its container: named after it, or started ahead and adopted (its id recorded beside it).
        (ls {state}/agent/lxc; for f in {state}/agent/lxc/*/sandbox-id; do [ -f "$f" ] && echo "$(cat "$f")"; done) \
          | grep -qx "$id" && echo "its container runs"
        {CHASER} sessions --json delete "$id" | jq -r .status
        eval "$({up})"  # a second up finds the running one and prints the same exports
        echo "key=$CHASER_API_KEY"
    """
    try:
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "hello from sandbox"
        assert lines[1] == "exit=3"
        assert lines[2] == "its container runs"
        assert lines[3] == "terminated"
        creds = json.loads((state / "credentials.json").read_text())
        assert lines[4] == f"key={creds['api_key']}"
        assert (state / "credentials.json").stat().st_mode & 0o077 == 0
    finally:
        down = subprocess.run([CHASER, "down", "--state-dir", str(state)], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not (state / "chaser.pid").exists()
    assert lxc.list_containers(active=True, defined=True, config_path=str(state / "agent" / "lxc")) == ()
    assert list((state / "agent" / "lxc").iterdir()) == []


def test_down_when_not_running(tmp_path: Path) -> None:
    done = subprocess.run([CHASER, "down", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert "not running" in done.stderr
