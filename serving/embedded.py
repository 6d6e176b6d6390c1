"""Embedded single-host mode: scheduler and agent in one process on this machine.

``chaser up`` imports this inside its command, so that every other ``chaser``
command starts without the servers (and their SQLAlchemy, alembic,
python-lxc). The files it keeps are laid out in ``chaser.embedded``.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import trio

from chaser.embedded import DEFAULT_IMAGES_DIR, DEFAULT_PORT, Credentials, Paths, read_credentials


def load_credentials(paths: Paths) -> Credentials:
    """The saved credentials, created (mode 0600) on first use."""
    try:
        return read_credentials(paths)
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
