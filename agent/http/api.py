"""The agent's HTTP API, spoken by the scheduler (and only by it).

Every route but ``/healthz`` requires the cluster token. Bodies are JSON,
strictly validated; errors use the shared JSON error shape.
"""

from __future__ import annotations

import hmac
import os

from quart import Response, request
from quart_trio import QuartTrio

from agent.browser.chromium import BROWSER_IMAGE
from agent.config import AgentConfig, host_memory_mb
from agent.http.browser_api import register_browser_routes
from agent.http.disk_api import register_disk_routes
from agent.registry.skopeo import Credentials
from agent.sandboxes.gitimport import GitImporter
from agent.sandboxes.lease_keeper import LeaseKeeper
from agent.sandboxes.manager import SandboxManager
from chaser.wire import errors
from chaser.wire.agent_api import CreateSandbox, DestroyQuery, ExecRequest, PauseQuery
from serving.quart_json import install_error_handlers, json_response, parse_body, parse_query

MAX_BODY = 1 << 20


def host_info(config: AgentConfig, manager: SandboxManager, keeper: LeaseKeeper) -> dict[str, object]:
    """What the scheduler needs to place sessions here, and to time them out."""
    runtimes = manager.runtime.describe()
    # Sandboxes that exist here and are not paused (resuming and pausing
    # ones included: they are not lost), and the paused ones.
    running = [s.id for s in manager.sandboxes() if s.status in ("running", "pausing", "resuming")]
    return {
        "host_id": config.host_id,
        "runtimes": sorted(runtimes),
        # What each runtime found out about the host (the VM accelerator).
        "runtime_info": runtimes,
        "session_types": session_types(manager),
        "images": manager.images.names(),
        # Whether sessions here may name any registry image (pulled on first
        # use), and the references of those already in its store.
        "pulls_images": manager.images.registry is not None,
        "registry_images": manager.images.registry_references(),
        "capacity": {
            "max_sandboxes": manager.max_sandboxes,
            "cpus": os.cpu_count() or 1,
            "memory_mb": host_memory_mb(),
            "warm": manager.warm.ready() if manager.warm is not None else {},
        },
        "sandboxes": running,
        "paused": [s.id for s in manager.sandboxes() if s.status == "paused"],
        # Per sandbox: open leases, and seconds since its last activity
        # (relative, so the two hosts' clocks need not agree).
        "activity": {
            sandbox_id: {"leases": keeper.count(sandbox_id), "idle_for": keeper.idle_for(sandbox_id)}
            for sandbox_id in running
        },
        "storage": manager.disks.info() if manager.disks is not None else None,
        # Whether sessions here can reach outside networks at all.
        "egress": manager.network is not None and manager.network.egress,
        "limits": {"default": config.limits.default.model_dump(), "max": config.limits.max.model_dump()},
        # Why sandboxes that ended on their own ended (a browser crash, say).
        "endings": dict(manager.endings),
    }


def session_types(manager: SandboxManager) -> list[str]:
    """Browser sessions need the browser image built here, and a way to run Chromium."""
    runs_browsers = manager.browsers is not None and BROWSER_IMAGE in manager.images.names()
    return ["sandbox", "browser"] if runs_browsers else ["sandbox"]


def argv_of(command: str | list[str]) -> list[str]:
    """A string runs through the shell (as in a curl example); a list is argv."""
    return ["/bin/sh", "-c", command] if isinstance(command, str) else command


def create_app(config: AgentConfig, manager: SandboxManager, keeper: LeaseKeeper) -> QuartTrio:
    app = QuartTrio("chaser-agent")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    install_error_handlers(app)
    token = config.token.get_secret_value().encode()

    @app.before_request
    async def _authenticate() -> None:
        if request.path == "/healthz":
            return
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token):
            raise errors.Unauthorized("missing or wrong host token")

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"ok": True})

    @app.get("/v1/host")
    async def get_host() -> Response:
        return json_response(host_info(config, manager, keeper))

    @app.get("/v1/sandboxes")
    async def list_sandboxes() -> Response:
        return json_response({"sandboxes": [s.to_json() for s in manager.sandboxes()]})

    @app.post("/v1/sandboxes")
    async def create_sandbox() -> Response:
        body = await parse_body(CreateSandbox)
        sandbox = await manager.create(
            body.id,
            body.image,
            body.workspace,
            network=body.network,
            egress_allow=body.egress_allow,
            limits=body.limits,
            fork_from=body.fork_from,
            session_type=body.session_type,
            credentials=Credentials(**body.registry_login.model_dump()) if body.registry_login else None,
            account=body.account,
        )
        return json_response(sandbox.to_json(), status=201)

    @app.get("/v1/sandboxes/<sandbox_id>")
    async def get_sandbox(sandbox_id: str) -> Response:
        sandbox = manager.get(sandbox_id).to_json()
        return json_response({**sandbox, "active_connection_leases": keeper.count(sandbox_id)})

    @app.delete("/v1/sandboxes/<sandbox_id>")
    async def delete_sandbox(sandbox_id: str) -> Response:
        force = parse_query(DestroyQuery).force in ("true", "1")
        await manager.destroy(sandbox_id, force=force)
        # An explicit empty body: quart-trio cannot send Quart's default one.
        return Response(b"", status=204)

    @app.post("/v1/sandboxes/<sandbox_id>/pause")
    async def pause_sandbox(sandbox_id: str) -> Response:
        # Unlike a destroy, a pause must be forced explicitly to end open connections.
        force = parse_query(PauseQuery).force in ("true", "1")
        return json_response((await manager.pause(sandbox_id, force=force)).to_json())

    @app.post("/v1/sandboxes/<sandbox_id>/resume")
    async def resume_sandbox(sandbox_id: str) -> Response:
        return json_response((await manager.resume(sandbox_id)).to_json())

    @app.post("/v1/sandboxes/<sandbox_id>/exec")
    async def exec_in_sandbox(sandbox_id: str) -> Response:
        body = await parse_body(ExecRequest)
        timeout = body.timeout_ms / 1000 if body.timeout_ms else None
        keeper.touch(sandbox_id)
        result = await manager.exec(sandbox_id, argv_of(body.command), body.env, body.cwd, timeout)
        keeper.touch(sandbox_id)
        return json_response(result.to_json())

    register_browser_routes(app, manager)
    if manager.disks is not None:
        register_disk_routes(app, manager.disks, GitImporter(manager, manager.disks))
    return app
