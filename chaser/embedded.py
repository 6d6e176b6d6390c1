"""Embedded single-host mode: scheduler and agent in one process on this machine.

State lives under one directory (``/var/lib/chaser/embedded`` by default):
the SQLite store, the agent's sandboxes, the credentials (host token and the
first user's API key, kept so that the next ``chaser up`` prints the same
key) and, while running, a pid file and a ready file. Sandboxes are
destroyed when the process stops: ``chaser down`` leaves nothing running.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import trio

# The servers (and their SQLAlchemy, alembic, python-lxc) are imported where
# they run: every `chaser` command imports this module, and should start fast.

DEFAULT_STATE_DIR = Path("/var/lib/chaser/embedded")
DEFAULT_IMAGES_DIR = Path("/var/lib/chaser/images")
DEFAULT_PORT = 8420


@dataclass(frozen=True)
class Credentials:
    token: str
    api_key: str


@dataclass(frozen=True)
class Paths:
    state_dir: Path

    @property
    def credentials(self) -> Path:
        return self.state_dir / "credentials.json"

    @property
    def pid(self) -> Path:
        return self.state_dir / "chaser.pid"

    @property
    def ready(self) -> Path:
        return self.state_dir / "ready.json"

    @property
    def log(self) -> Path:
        return self.state_dir / "chaser.log"


def load_credentials(paths: Paths) -> Credentials:
    """The saved credentials, created (mode 0600) on first use."""
    try:
        data = json.loads(paths.credentials.read_text())
        return Credentials(token=data["token"], api_key=data["api_key"])
    except FileNotFoundError:
        pass
    from scheduler.auth import new_secret

    paths.state_dir.mkdir(parents=True, exist_ok=True)
    creds = Credentials(token=secrets.token_urlsafe(32), api_key=new_secret())
    fd = os.open(paths.credentials, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"token": creds.token, "api_key": creds.api_key}, f)
    return creds


def load_sealing_key(paths: Paths) -> str:
    """The key sealing accounts' registry logins, created (mode 0600) on first use.

    Apart from ``credentials.json`` so that file keeps its shape, and from
    the database so a copy of the store alone opens no login.
    """
    path = paths.state_dir / "registry-credentials.key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


async def serve(
    state_dir: Path,
    *,
    port: int = DEFAULT_PORT,
    images_dir: Path = DEFAULT_IMAGES_DIR,
    uplink: str | None = None,
    image_aliases: dict[str, str] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run scheduler and agent; report the API URL once the agent is registered.

    Sessions get egress only with ``uplink`` (or ``CHASER_AGENT_NETWORK__UPLINK``):
    NATing them out of this machine's network is the user's decision.
    """
    from agent.config import AgentConfig
    from agent.main import serve as serve_agent
    from scheduler.config import SchedulerConfig
    from scheduler.main import serve as serve_scheduler

    paths = Paths(state_dir)
    creds = load_credentials(paths)
    scheduler_config = SchedulerConfig.load(
        None,
        bind=f"127.0.0.1:{port}",
        database_url=f"sqlite:///{state_dir / 'chaser.db'}",
        token=creds.token,
        bootstrap_api_key=creds.api_key,
        heartbeat_timeout=10.0,
        registry_credentials_key=load_sealing_key(paths),
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_scheduler, scheduler_config)
        agent_config = AgentConfig.load(
            None,
            host_id="embedded",
            bind="127.0.0.1:0",
            state_dir=state_dir / "agent",
            images_dir=images_dir,
            scheduler_url=url,
            token=creds.token,
            destroy_on_shutdown=True,
            image_aliases=image_aliases or {},
        )
        if uplink is not None:
            agent_config.network.uplink = uplink
        await nursery.start(serve_agent, agent_config)
        paths.ready.write_text(json.dumps({"api_url": url, "pid": os.getpid()}))
        try:
            task_status.started(url)
            await trio.sleep_forever()
        finally:
            paths.ready.unlink(missing_ok=True)


def exports(api_url: str, creds: Credentials) -> str:
    """Shell lines that point the CLI and curl examples here."""
    return f"export CHASER_API_URL={api_url}\nexport CHASER_API_KEY={creds.api_key}\n"
