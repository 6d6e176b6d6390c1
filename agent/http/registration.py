"""Registration with the scheduler: a heartbeat carrying capacity and sandboxes.

The heartbeat is also how the scheduler reconciles: it lists the sandboxes
that really run here, and the scheduler repairs its view from it.
"""

from __future__ import annotations

import logging

import httpx
import trio

from agent.config import AgentConfig
from agent.http.api import host_info
from agent.sandboxes.lease_keeper import LeaseKeeper
from agent.sandboxes.manager import SandboxManager

log = logging.getLogger(__name__)


async def heartbeat_loop(
    config: AgentConfig,
    url: str,
    manager: SandboxManager,
    keeper: LeaseKeeper,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Heartbeat forever; report started after the first one is accepted."""
    assert config.scheduler_url is not None
    endpoint = config.scheduler_url.rstrip("/") + "/internal/v1/hosts/heartbeat"
    headers = {"Authorization": f"Bearer {config.token.get_secret_value()}"}
    started = False
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        while True:
            await manager.reap()
            try:
                info = {**host_info(config, manager, keeper), "url": url}
                response = await client.post(endpoint, json=info, headers=headers)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                log.warning("heartbeat to %s failed: %s", endpoint, exc)
            else:
                if not started:
                    started = True
                    task_status.started()
            await trio.sleep(config.heartbeat_interval)
