"""The public ``/v1/workspaces`` routes: workspaces, snapshots, clones, imports.

Registered by ``scheduler.api.create_app``. Anywhere a path takes a
workspace, ``{selector}`` is its name (preferred) or its UUID, within the
caller's account; anything else is 404. Reads need ``workspaces.read``,
changes ``workspaces.write``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator
from quart import Response
from quart_trio import QuartTrio

from chaser.wire import errors
from scheduler.access import audit_resource, principal, requires
from scheduler.models import ForceQuery, ImageName, StrictBody
from scheduler.pagination import decode_cursor, encode_cursor
from scheduler.workspace_lookup import check_name
from scheduler.workspaces import WorkspaceService
from serving.quart_json import json_response, parse_body, parse_query

WorkspaceName = Annotated[str, AfterValidator(check_name)]
SnapshotName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x20-\x7e]+$")]


def _check_ref(ref: str) -> str:
    # git check-ref-format's rules that matter here; git refuses the rest.
    if ref.startswith("-") or ".." in ref or "@{" in ref or ref.endswith((".lock", "/", ".")):
        raise ValueError("not a valid branch, tag or commit name")
    return ref


GitRef = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._/-]+$"), AfterValidator(_check_ref)
]
# Printable ASCII without spaces: it becomes an HTTP header on the host.
GitToken = Annotated[SecretStr, Field(min_length=1, max_length=1024)]
_TOKEN = re.compile(r"^[\x21-\x7e]+$")


def _token(secret: SecretStr | None) -> str | None:
    if secret is None:
        return None
    token = secret.get_secret_value()
    if not _TOKEN.match(token):
        raise errors.InvalidInput("token: must be printable ASCII without spaces", code="invalid_request")
    return token


class CreateWorkspaceBody(StrictBody):
    session_type: Literal["sandbox", "browser"] = "sandbox"
    name: WorkspaceName
    image: ImageName | None = None

    @model_validator(mode="after")
    def _image_for_sandboxes(self) -> CreateWorkspaceBody:
        if self.session_type == "browser" and self.image is not None:
            raise ValueError("browser workspaces do not take an image")
        return self


class ImportBody(StrictBody):
    repository: str = Field(min_length=1, max_length=512)
    ref: GitRef | None = None
    token: GitToken | None = None
    name: WorkspaceName | None = None
    image: ImageName | None = None


class UpdateBody(StrictBody):
    name: WorkspaceName | None = None
    is_template: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateBody:
        if self.name is None and self.is_template is None:
            raise ValueError("give name or is_template")
        return self


class CloneBody(StrictBody):
    name: WorkspaceName
    snapshot: str | None = Field(default=None, min_length=1, max_length=64)


class SnapshotBody(StrictBody):
    name: SnapshotName | None = None


class BootstrapBody(StrictBody):
    token: GitToken | None = None


class ListWorkspacesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: Literal["true", "false"] | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = None


def _forced() -> bool:
    return parse_query(ForceQuery).force in ("true", "1")


def register_workspace_routes(app: QuartTrio, workspaces: WorkspaceService) -> None:
    @app.post("/v1/workspaces")
    @requires("workspaces.write", action="workspace.create", resource="workspace")
    async def create_workspace() -> Response:
        body = await parse_body(CreateWorkspaceBody)
        row = await workspaces.create(
            principal().account_id, name=body.name, session_type=body.session_type, image=body.image
        )
        audit_resource(row["id"])
        return json_response(await workspaces.render(row), status=201)

    @app.get("/v1/workspaces")
    @requires("workspaces.read", action="workspace.list", resource="workspace")
    async def list_workspaces() -> Response:
        query = parse_query(ListWorkspacesQuery)
        rows = await workspaces.list_page(
            principal().account_id,
            template=None if query.template is None else query.template == "true",
            limit=query.limit + 1,
            after=decode_cursor(query.cursor, check_name)[0] if query.cursor else None,
        )
        page = rows[: query.limit]
        next_cursor = encode_cursor(page[-1]["name_key"]) if len(rows) > query.limit else None
        return json_response({"workspaces": await workspaces.render_all(page), "next_cursor": next_cursor})

    @app.post("/v1/workspaces/import")
    @requires("workspaces.write", action="workspace.import", resource="workspace")
    async def import_workspace() -> Response:
        body = await parse_body(ImportBody)
        row = await workspaces.import_repository(
            principal().account_id,
            repository=body.repository,
            ref=body.ref,
            token=_token(body.token),
            name=body.name,
            image=body.image,
        )
        audit_resource(row["id"])
        return json_response(await workspaces.render(row), status=201)

    @app.get("/v1/workspaces/<selector>")
    @requires("workspaces.read", action="workspace.get", resource="workspace")
    async def get_workspace(selector: str) -> Response:
        return json_response(await workspaces.render(await workspaces.resolve(principal().account_id, selector)))

    @app.patch("/v1/workspaces/<selector>")
    @requires("workspaces.write", action="workspace.update", resource="workspace")
    async def update_workspace(selector: str) -> Response:
        body = await parse_body(UpdateBody)
        row = await workspaces.update(principal().account_id, selector, name=body.name, is_template=body.is_template)
        return json_response(await workspaces.render(row))

    @app.delete("/v1/workspaces/<selector>")
    @requires("workspaces.write", action="workspace.delete", resource="workspace")
    async def delete_workspace(selector: str) -> Response:
        await workspaces.delete(principal().account_id, selector, force=_forced())
        return Response(b"", status=204)

    @app.post("/v1/workspaces/<selector>/clone")
    @requires("workspaces.write", action="workspace.clone", resource="workspace")
    async def clone_workspace(selector: str) -> Response:
        force = _forced()
        body = await parse_body(CloneBody)
        row = await workspaces.clone(
            principal().account_id, selector, name=body.name, snapshot_id=body.snapshot, force=force
        )
        audit_resource(row["id"])
        return json_response(await workspaces.render(row), status=201)

    @app.post("/v1/workspaces/<selector>/bootstrap")
    @requires("workspaces.write", action="workspace.bootstrap", resource="workspace")
    async def bootstrap_workspace(selector: str) -> Response:
        force = _forced()
        body = await parse_body(BootstrapBody)
        row = await workspaces.rebootstrap(principal().account_id, selector, token=_token(body.token), force=force)
        return json_response(await workspaces.render(row))

    @app.post("/v1/workspaces/<selector>/snapshots")
    @requires("workspaces.write", action="snapshot.create", resource="snapshot")
    async def create_snapshot(selector: str) -> Response:
        force = _forced()
        body = await parse_body(SnapshotBody)
        row = await workspaces.snapshot(principal().account_id, selector, name=body.name, force=force)
        audit_resource(row["id"])
        return json_response(workspaces.snapshot_json(row), status=201)

    @app.get("/v1/workspaces/<selector>/snapshots")
    @requires("workspaces.read", action="snapshot.list", resource="snapshot")
    async def list_snapshots(selector: str) -> Response:
        rows = await workspaces.snapshots(principal().account_id, selector)
        return json_response({"snapshots": [workspaces.snapshot_json(r) for r in rows]})

    @app.get("/v1/workspaces/<selector>/snapshots/<snapshot_id>")
    @requires("workspaces.read", action="snapshot.get", resource="snapshot")
    async def get_snapshot(selector: str, snapshot_id: str) -> Response:
        row = await workspaces.get_snapshot(principal().account_id, selector, snapshot_id)
        return json_response(workspaces.snapshot_json(row))

    @app.post("/v1/workspaces/<selector>/snapshots/<snapshot_id>/restore")
    @requires("workspaces.write", action="snapshot.restore", resource="snapshot")
    async def restore_snapshot(selector: str, snapshot_id: str) -> Response:
        row = await workspaces.restore(principal().account_id, selector, snapshot_id, force=_forced())
        return json_response(await workspaces.render(row))

    @app.delete("/v1/workspaces/<selector>/snapshots/<snapshot_id>")
    @requires("workspaces.write", action="snapshot.delete", resource="snapshot")
    async def delete_snapshot(selector: str, snapshot_id: str) -> Response:
        await workspaces.delete_snapshot(principal().account_id, selector, snapshot_id)
        return Response(b"", status=204)
