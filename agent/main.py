"""``chaser-agent``: serve the agent API, or build an image."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from pydantic import ValidationError

import vmimages
from agent.browser import Browsers
from agent.config import DEFAULT_CONFIG_FILE, AgentConfig
from agent.endpoints.cdp_proxy import CdpProxy
from agent.endpoints.connections import SessionConnections
from agent.endpoints.dispatch import Endpoints
from agent.endpoints.ports import PortForwarding
from agent.endpoints.pty import PtyHub
from agent.http.api import create_app
from agent.http.detached_api import register_detached_routes
from agent.http.image_api import ImagePulls, register_image_routes
from agent.http.registration import heartbeat_loop
from agent.network.pool import SlotPool
from agent.registry.store import LayerStore
from agent.runtimes.setup import refusals, start_runtimes
from agent.sandboxes.detached import DetachedExecs
from agent.sandboxes.images import ImageStore
from agent.sandboxes.lease_keeper import LeaseKeeper
from agent.sandboxes.manager import SandboxManager
from agent.storage.disks import DiskManager
from agent.storage.idmap import IdMap
from agent.storage.pool import StoragePool
from agent.storage.scratch import ScratchVolume
from chaser.wire.frames import MAX_CLIENT_FRAME
from serving import front, logs
from serving.signals import run_until_signalled

log = logging.getLogger(__name__)


async def serve(config: AgentConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Recover, serve the API, heartbeat; report the agent's URL once ready.

    Set up in order (scratch disk, runtimes, sandboxes, network pool, API)
    and torn down in reverse, so sandboxes are destroyed while their
    network exists.
    """
    scratch = ScratchVolume(config.state_dir / "disks", config.state_dir / "disks.btrfs", config.scratch_size_gb)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    await trio.to_thread.run_sync(scratch.open)
    try:
        async with trio.open_nursery() as runtimes_nursery:
            runtime = await start_runtimes(config, runtimes_nursery, scratch)
            storage = await trio.to_thread.run_sync(StoragePool, config.storage_dir or config.state_dir / "storage")
            disks = DiskManager(
                storage,
                config.state_dir / "mounts",
                op_timeout=config.disk_op_timeout,
                import_timeout=config.import_timeout,
                idmap=IdMap(config.container_id_first, config.container_id_count),
            )
            pool = SlotPool(config.network, remove_on_exit=config.destroy_on_shutdown)
            browsers = Browsers(runtime)
            idmap = IdMap(config.container_id_first, config.container_id_count)
            # No registry allowed: only built-in images, and the host says it pulls none.
            layers = None
            if config.registry.allowed:
                store_dir = config.registry.store_dir or config.state_dir / "image-store"
                layers = await trio.to_thread.run_sync(LayerStore, store_dir, idmap, config.registry)
            images = ImageStore(
                config.images_dir, runtime.runtimes, config.image_aliases, refusals(runtime), registry=layers
            )
            manager = SandboxManager(
                runtime,
                images,
                config.state_dir,
                max_sandboxes=config.max_sandboxes,
                start_timeout=config.start_timeout,
                output_limit=config.exec_output_limit,
                disks=disks,
                network=pool,
                limits=config.limits,
                browsers=browsers,
            )
            keeper = LeaseKeeper(config.lease_keepalive_timeout, config.lease_idle_timeout)
            ptys = PtyHub(manager, scrollback=config.pty_scrollback_bytes, max_per_sandbox=config.pty_max_per_sandbox)
            manager.connections = SessionConnections(keeper, ptys)
            await manager.recover()
            async with pool.running(manager.leases()), browsers.running():
                try:
                    await _serve_api(config, manager, keeper, ptys, task_status)
                finally:
                    if config.destroy_on_shutdown:
                        with trio.CancelScope(shield=True):
                            await manager.destroy_all()
    finally:
        # A host service's sandboxes outlive it, and keep their disks.
        if config.destroy_on_shutdown:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(partial(scratch.close, remove=True))


async def _serve_api(
    config: AgentConfig,
    manager: SandboxManager,
    keeper: LeaseKeeper,
    ptys: PtyHub,
    task_status: trio.TaskStatus[str],
) -> None:
    hypercorn = HypercornConfig()
    hypercorn.accesslog = None
    hypercorn.graceful_timeout = 1
    # A bound on what one WebSocket message may make hypercorn buffer. The
    # PTY and exec endpoints refuse far smaller frames themselves (1009).
    hypercorn.websocket_max_message_size = 16 * MAX_CLIENT_FRAME
    async with trio.open_nursery() as nursery:
        execs = DetachedExecs(manager)
        await nursery.start(execs.run)
        await nursery.start(keeper.run)
        await nursery.start(ptys.run)
        if config.warm_pool.size:
            await nursery.start(manager.keep_warm(config.warm_pool.images, config.warm_pool.size).run)
        pulls = ImagePulls(manager)
        await nursery.start(pulls.run)
        api = create_app(config, manager, keeper)
        register_detached_routes(api, execs)
        register_image_routes(api, pulls)
        app = Endpoints(config, manager, keeper, ptys, api)
        token = config.token.get_secret_value().encode()
        ports = PortForwarding(token, manager, keeper)
        cdp = CdpProxy(token, manager, keeper)
        route = front.first_of(ports.route, cdp.route)
        url = await nursery.start(partial(front.serve, app, hypercorn, config.bind, route))
        url = config.advertise_url or url
        if config.scheduler_url:
            await nursery.start(heartbeat_loop, config, url, manager, keeper)
        log.info("agent %s ready at %s", config.host_id, url)
        task_status.started(url)


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
    logs.setup()
    if args.command == "build-image":
        recipe = vmimages.resolve(args.name)
        if recipe is None:
            parser.error(f"unknown image {args.name!r}; known: {', '.join(sorted(vmimages.RECIPES))}")
        # Building an image uses no token; the configuration needs one to load.
        images_dir = args.images_dir or AgentConfig.load(args.config, token=secrets.token_hex(32)).images_dir
        print(vmimages.build(images_dir, recipe, args.mirror))
        return
    try:
        config = AgentConfig.load(args.config)
    except ValidationError as exc:
        sys.exit(f"chaser-agent: bad configuration in {args.config} or CHASER_AGENT_*: {exc}")
    trio.run(run_until_signalled, serve, config)
