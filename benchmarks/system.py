"""The system under measurement, run as users run it: ``chaser up`` in its own process.

Running the servers inside the benchmark's process would make the client's
own work (httpx, JSON, timing) compete with them for one interpreter, and
charge Chaser for it. So a benchmark starts ``python -m chaser.cli up``
with a fresh state directory, listening on loopback only, and stops it
with SIGTERM (the cleanup path an operator's ``chaser down`` takes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trio

from chaser import embedded

IMAGES_DIR = Path("/var/lib/chaser/images")
LOOPBACK = "127.0.0.1"
# Proxy settings would send the servers' own HTTP calls (heartbeats,
# scheduler to agent) off the host; loopback only means none.
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class System:
    url: str
    credentials: embedded.Credentials
    pid: int


def container_name(lxc_path: Path, session_id: str) -> str:
    """The LXC name of a session's container: its id, unless the agent started it
    ahead (warm pool) and adopted it, recording the session's id beside it."""
    for record in lxc_path.glob("*/sandbox-id"):
        if record.read_text() == session_id:
            return record.parent.name
    return session_id


def started_ahead(lxc_path: Path) -> set[str]:
    """Containers of the agent's warm pool that no session took: the agent's, no leak."""
    return {p.parent.name for p in lxc_path.glob("warm-*/config") if not (p.parent / "sandbox-id").exists()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def chaser_up(state_dir: Path, rate_limits: str = '{"enabled": false}') -> AsyncIterator[System]:
    """``chaser up`` on a free loopback port until the block ends; fails if it cannot start.

    The benchmarks measure the hot paths, not the rate limiter's 429s: it is
    off unless ``rate_limits`` (the setting, as JSON) says otherwise.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env["CHASER_SCHEDULER_RATE_LIMITS"] = rate_limits
    command = [
        sys.executable, "-m", "chaser.cli", "up",
        "--state-dir", str(state_dir), "--images-dir", str(IMAGES_DIR), "--port", str(port),
    ]  # fmt: skip
    log = open(state_dir / "up.log", "wb")  # noqa: SIM115 - closed below, after the process
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=log, env=env)
    try:
        assert process.stdout is not None
        announced = b""
        while b"CHASER_API_KEY" not in announced:
            data = await process.stdout.receive_some()
            if not data:
                raise RuntimeError(f"chaser up exited: {(state_dir / 'up.log').read_text()[-2000:]}")
            announced += data
        yield System(f"http://{LOOPBACK}:{port}", embedded.read_credentials(embedded.Paths(state_dir)), process.pid)
    finally:
        with trio.CancelScope(shield=True):
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(_STOP_TIMEOUT):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            log.close()
