"""``chaser-scheduler``: the public API, placement and reconciliation."""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from pydantic import ValidationError

from scheduler import token_keys
from scheduler.agents import AgentClient
from scheduler.api import create_app
from scheduler.auth import ensure_key
from scheduler.config import DEFAULT_CONFIG_FILE, SchedulerConfig
from scheduler.jobs import JobService, register_job_routes
from scheduler.quotas import QuotaGuard
from scheduler.rate_limits import RateLimiter
from scheduler.router import EdgeRouter
from scheduler.sessions import SessionService
from scheduler.store import Store
from scheduler.webhook_delivery import DeliveryWorker
from scheduler.workspaces import WorkspaceService
from serving import front, logs
from serving.front_limits import FrontLimits
from serving.signals import run_until_signalled

log = logging.getLogger(__name__)


def _sqlite_dir(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url.removeprefix(prefix)).parent if url.startswith(prefix) and url != "sqlite://" else None


async def serve(config: SchedulerConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Migrate, bootstrap, serve; report the public URL once listening."""
    db_dir = _sqlite_dir(config.database_url)
    if db_dir is not None:
        db_dir.mkdir(parents=True, exist_ok=True)
    store = Store(config.database_url)
    store.quota_guard = QuotaGuard(config.quotas)
    await store.run(store.migrate)
    if config.bootstrap_api_key is not None:
        await store.run(
            ensure_key, store, config.bootstrap_email, config.bootstrap_api_key.get_secret_value(), "bootstrap"
        )
    agents = AgentClient(config.token.get_secret_value())
    hypercorn = HypercornConfig()
    hypercorn.accesslog = None
    hypercorn.graceful_timeout = 1
    try:
        async with trio.open_nursery() as nursery:
            # The public URL may depend on the port bound, known only once
            # listening; the service needs it only to render responses.
            service = SessionService(store, agents, config, public_url=config.public_url or "")
            await nursery.start(service.run)
            await nursery.start(DeliveryWorker(store, config).run)
            workspaces = WorkspaceService(service)
            await nursery.start(workspaces.run)
            jobs = JobService(service, config, workspaces)
            await nursery.start(jobs.run)
            keys = await token_keys.load(config, store)
            app = create_app(config, service, workspaces, keys)
            register_job_routes(app, jobs)
            route = front.first_of(RateLimiter(config.rate_limits).route, EdgeRouter(service, keys).route)
            limits = FrontLimits(
                header_timeout=config.header_timeout,
                body_timeout=config.body_timeout,
                max_connections_per_address=config.max_connections_per_address or None,
            )
            url = await nursery.start(partial(front.serve, app, hypercorn, config.bind, route, limits=limits))
            service.public_url = (config.public_url or url).rstrip("/")
            log.info("scheduler ready at %s", service.public_url)
            task_status.started(service.public_url)
    finally:
        with trio.CancelScope(shield=True):
            await agents.aclose()
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chaser-scheduler", description="Chaser control plane")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_FILE)
    args = parser.parse_args(argv)
    logs.setup()
    try:
        config = SchedulerConfig.load(args.config)
    except ValidationError as exc:
        sys.exit(f"chaser-scheduler: bad configuration in {args.config} or CHASER_SCHEDULER_*: {exc}")
    trio.run(run_until_signalled, serve, config)
