"""The public REST API (``/v1``) and the agents' heartbeat endpoint.

Every ``/v1`` route names the scope it needs in its ``@requires`` line, and
acts only on the caller's account. Ids in paths that are not UUIDs are
simply unknown ids: 404, like any other id the caller cannot see.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal, ParamSpec

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from quart import Response, request
from quart_trio import QuartTrio

from chaser.wire import errors
from chaser.wire.agent_api import ExecRequest
from chaser.wire.isolation import Limits
from scheduler.access import audit_resource, principal, requires
from scheduler.config import SchedulerConfig
from scheduler.images_api import ImageService, register_image_routes
from scheduler.lifecycle import SessionLifecycle, register_lifecycle_routes
from scheduler.models import (
    ExecBody,
    ForceQuery,
    ImageName,
    IsolationFields,
    Query,
    Selector,
    session_id_of,
)
from scheduler.pagination import decode_cursor, encode_cursor
from scheduler.quotas_api import register_quota_routes
from scheduler.registry_credentials import register_registry_credential_routes
from scheduler.session_routes import register_session_routes
from scheduler.sessions import SessionService
from scheduler.tenancy import install_tenancy
from scheduler.token_keys import TokenKeys
from scheduler.workspace_api import register_workspace_routes
from scheduler.workspaces import WorkspaceService
from serving.quart_json import install_error_handlers, json_response, parse_body, parse_query

P = ParamSpec("P")


class CreateSessionBody(IsolationFields):
    session_type: Literal["sandbox", "browser"] = "sandbox"
    workspace: Selector | None = None
    ephemeral: bool = False
    image: ImageName | None = None
    timeout_ms: Annotated[int, Field(gt=0)] | None = None
    idle_timeout_ms: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _seed_rules(self) -> CreateSessionBody:
        check_session_rules(self.session_type, self.ephemeral, self.workspace, self.image)
        return self


def check_session_rules(session_type: str, ephemeral: bool, workspace: str | None, image: str | None) -> None:
    """What a session may be: ephemeral or on a workspace, and who may name an image."""
    if ephemeral and workspace is not None:
        raise ValueError("an ephemeral session takes no workspace")
    if not ephemeral and workspace is None:
        raise ValueError("a workspace is required unless ephemeral is true")
    if session_type == "browser" and image is not None:
        raise ValueError("browser sessions do not accept image")
    if session_type == "sandbox" and image is not None and not ephemeral:
        raise ValueError(
            "image is accepted only when ephemeral is true; a persistent sandbox uses its workspace's image"
        )


class ListSessionsQuery(Query):
    status: Literal["creating", "running", "paused", "terminated"] | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = None


def create_app(
    config: SchedulerConfig, service: SessionService, workspaces: WorkspaceService, token_keys: TokenKeys | None = None
) -> QuartTrio:
    app = QuartTrio("chaser-scheduler")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    install_error_handlers(app)
    store = service.store
    cluster_token = config.token.get_secret_value().encode()

    install_tenancy(app, config, store)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"ok": True})

    @app.post("/internal/v1/hosts/heartbeat")
    async def heartbeat() -> Response:
        header = request.headers.get("Authorization", "")
        if not hmac.compare_digest(header.removeprefix("Bearer ").encode(), cluster_token):
            raise errors.Unauthorized("missing or wrong host token")
        body = await parse_body(HeartbeatBody)
        await service.on_heartbeat(body.model_dump())
        await workspaces.on_heartbeat(body.host_id, body.storage.model_dump() if body.storage else None)
        return json_response({"ok": True})

    @app.post("/v1/sessions")
    @requires("sessions.write", action="session.create")
    async def create_session() -> Response:
        body = await parse_body(CreateSessionBody)
        row = await service.create(
            principal().account_id,
            session_type=body.session_type,
            ephemeral=body.ephemeral,
            workspace=body.workspace,
            image=body.image,
            network=body.network,
            egress_allow=body.egress_allow,
            limits=body.limits,
            timeout_ms=body.timeout_ms,
            idle_timeout_ms=body.idle_timeout_ms,
        )
        audit_resource(row["id"])
        return json_response(service.to_json(row), status=201)

    @app.get("/v1/sessions")
    @requires("sessions.read", action="session.list")
    async def list_sessions() -> Response:
        query = parse_query(ListSessionsQuery)
        after = decode_cursor(query.cursor, float, str) if query.cursor else None
        rows = await store.run(
            store.list_sessions, principal().account_id, status=query.status, limit=query.limit + 1, after=after
        )
        page = rows[: query.limit]
        next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > query.limit else None
        return json_response({"sessions": [service.to_json(r) for r in page], "next_cursor": next_cursor})

    @app.get("/v1/sessions/<raw_id>")
    @requires("sessions.read", action="session.get")
    async def get_session(raw_id: str) -> Response:
        row = await service.get(principal().account_id, session_id_of(raw_id))
        return json_response(service.to_json(await service.with_live_leases(row)))

    @app.delete("/v1/sessions/<raw_id>")
    @requires("sessions.write", action="session.terminate")
    async def delete_session(raw_id: str) -> Response:
        force = parse_query(ForceQuery).force in ("true", "1")
        row = await service.terminate(
            principal().account_id, session_id_of(raw_id), force=force, reason="terminated by request"
        )
        return json_response(service.to_json(row))

    @app.post("/v1/exec")
    @requires("exec.write", action="exec.run", resource="session")
    async def exec_command() -> Response:
        body = await parse_body(ExecBody)
        agent_body = ExecRequest(command=body.command, env=body.env, cwd=body.cwd, timeout_ms=body.timeout_ms)
        timeout = body.timeout_ms / 1000
        account_id = principal().account_id
        if body.ephemeral:
            result = await service.exec_ephemeral(
                account_id,
                body.image,
                agent_body,
                timeout,
                network=body.network,
                egress_allow=body.egress_allow,
                limits=body.limits,
            )
        elif body.workspace is not None:
            result = await workspaces.exec_on(account_id, body.workspace, agent_body, timeout)
        else:
            row = await service.get(account_id, session_id_of(body.session_id or ""))
            result = {**await service.exec_in(row, agent_body, timeout), "session_id": row["id"]}
        audit_resource(result["session_id"])
        return json_response(result)

    register_lifecycle_routes(app, SessionLifecycle(service))
    register_session_routes(app, service, (token_keys or TokenKeys.random()).signing)
    register_workspace_routes(app, workspaces)
    register_registry_credential_routes(app, service.registry_logins)
    register_image_routes(app, ImageService(service))
    register_quota_routes(app, store, config.quotas)
    return app


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    class Capacity(BaseModel):
        model_config = ConfigDict(extra="forbid")
        max_sandboxes: int = Field(ge=0)
        cpus: int = Field(ge=1)
        memory_mb: int = Field(ge=0)
        # Containers started ahead and ready, per image (they are not sessions).
        warm: dict[Annotated[str, StringConstraints(max_length=512)], Annotated[int, Field(ge=0)]] = Field(
            default_factory=dict, max_length=64
        )

    class Storage(BaseModel):
        """The host's pool of workspace disks."""

        model_config = ConfigDict(extra="forbid")
        reflink: bool
        capacity_bytes: int = Field(ge=0)
        free_bytes: int = Field(ge=0)

    host_id: str = Field(min_length=1, max_length=128)
    url: str = Field(min_length=1, max_length=512)
    runtimes: list[str]
    runtime_info: dict[str, dict[str, Any]] = Field(default_factory=dict)
    session_types: list[str]
    images: list[str]
    # It runs registry images (pulled on first use); the references it holds.
    pulls_images: bool = False
    registry_images: list[Annotated[str, StringConstraints(max_length=512)]] = Field(
        default_factory=list, max_length=10_000
    )

    class Activity(BaseModel):
        """A sandbox's open leases, and seconds since its last activity."""

        model_config = ConfigDict(extra="forbid")
        leases: int = Field(ge=0)
        idle_for: float | None = Field(ge=0)

    capacity: Capacity
    sandboxes: list[str]
    paused: list[str] = Field(default_factory=list)
    activity: dict[str, Activity] = Field(default_factory=dict)
    storage: Storage | None = None
    egress: bool = False
    # Why sandboxes that ended on their own ended, by id (a browser's crash, say).
    endings: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, Limits] | None = None
