"""``chaser-agent``: serve the agent API, or build an image."""

from __future__ import annotations

import argparse
import logging
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

import vmimages
from agent.api import create_app
from agent.config import DEFAULT_CONFIG_FILE, AgentConfig
from agent.images import ImageStore
from agent.registration import heartbeat_loop
from agent.runtimes.lxc import LxcRuntime
from agent.sandboxes import SandboxManager
from chaser import _logging
from chaser._signals import run_until_signalled

log = logging.getLogger(__name__)


async def serve(config: AgentConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Recover, serve the API, heartbeat; report the agent's URL once ready."""
    runtime = LxcRuntime(config.state_dir / "lxc", config.init_binary)
    manager = SandboxManager(
        runtime,
        ImageStore(config.images_dir),
        config.state_dir,
        max_sandboxes=config.max_sandboxes,
        start_timeout=config.start_timeout,
        output_limit=config.exec_output_limit,
    )
    await manager.recover()
    hypercorn = HypercornConfig()
    hypercorn.accesslog = None
    hypercorn.graceful_timeout = 1
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(hypercorn_serve, create_app(config, manager), hypercorn))
            url = config.advertise_url or binds[0]
            if config.scheduler_url:
                await nursery.start(heartbeat_loop, config, url, manager)
            log.info("agent %s ready at %s", config.host_id, url)
            task_status.started(url)
    finally:
        if config.destroy_on_shutdown:
            with trio.CancelScope(shield=True):
                await manager.destroy_all()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chaser-agent", description="Chaser host agent")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_FILE)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="serve the agent API (default)")
    build = sub.add_parser("build-image", help="build an image's root filesystem (cached by recipe)")
    build.add_argument("name", nargs="?", default="default")
    build.add_argument("--images-dir", type=Path, default=None)
    build.add_argument("--mirror", default=vmimages.DEFAULT_MIRROR)
    args = parser.parse_args(argv)
    _logging.setup()
    if args.command == "build-image":
        recipe = vmimages.resolve(args.name)
        if recipe is None:
            parser.error(f"unknown image {args.name!r}; known: {', '.join(sorted(vmimages.RECIPES))}")
        images_dir = args.images_dir or AgentConfig.load(args.config, token="unused").images_dir
        print(vmimages.build(images_dir, recipe, args.mirror))
        return
    trio.run(run_until_signalled, serve, AgentConfig.load(args.config))
