"""The agent's routes for workspace disks and their snapshots (scheduler only).

Ids are canonical UUIDs chosen by the scheduler; they become file names, so
nothing else is accepted. A repository token arrives in a request body and
goes no further than git's environment: it is not logged or kept.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator
from quart import Response
from quart_trio import QuartTrio

from agent.sandboxes.gitimport import GitImporter, GitSource
from agent.storage.disks import DiskManager
from chaser.wire import errors
from chaser.wire.agent_api import UUID_PATTERN, Uuid
from serving.quart_json import json_response, parse_body

# A ref never starts with "-", so git cannot take it for an option.
GitRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/][A-Za-z0-9._/-]{0,254}$")]

MAX_DISK_BYTES = 1 << 44  # 16 TiB


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GitBody(_Strict):
    url: str = Field(pattern=r"^https?://", max_length=2048)
    ref: GitRef | None = None
    token: SecretStr | None = Field(default=None, max_length=1024)

    def source(self) -> GitSource:
        token = self.token.get_secret_value() if self.token is not None else None
        return GitSource(url=self.url, ref=self.ref, token=token)


class CloneSource(_Strict):
    disk: Uuid
    snapshot: Uuid | None = None
    force: bool = False


class CreateDisk(_Strict):
    id: Uuid
    size_bytes: int = Field(gt=0, le=MAX_DISK_BYTES)
    source: CloneSource | None = None
    git: GitBody | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> CreateDisk:
        if self.source is not None and self.git is not None:
            raise ValueError("give source or git, not both")
        return self


class ImportBody(_Strict):
    size_bytes: int = Field(gt=0, le=MAX_DISK_BYTES)
    git: GitBody


class SnapshotBody(_Strict):
    id: Uuid
    force: bool = False


class RestoreBody(_Strict):
    snapshot: Uuid


def _check(*ids: str) -> None:
    """Ids in paths that are not canonical UUIDs name nothing here."""
    for an_id in ids:
        if not re.match(UUID_PATTERN, an_id):
            raise errors.NotFound(f"{an_id!r} is not a disk or snapshot id", code="not_found")


def register_disk_routes(app: QuartTrio, disks: DiskManager, importer: GitImporter) -> None:
    @app.post("/v1/disks")
    async def create_disk() -> Response:
        body = await parse_body(CreateDisk)
        frozen = False
        if body.source is not None:
            frozen = await disks.clone(body.id, body.source.disk, body.source.snapshot, body.source.force)
        elif body.git is not None:
            await importer.import_git(body.id, body.size_bytes, body.git.source(), replace=False)
        else:
            await disks.create(body.id, body.size_bytes)
        return json_response({"id": body.id, "frozen": frozen}, status=201)

    @app.delete("/v1/disks/<disk_id>")
    async def delete_disk(disk_id: str) -> Response:
        _check(disk_id)
        await disks.delete(disk_id)
        return Response(b"", status=204)

    @app.post("/v1/disks/<disk_id>/import")
    async def reimport(disk_id: str) -> Response:
        _check(disk_id)
        body = await parse_body(ImportBody)
        await importer.import_git(disk_id, body.size_bytes, body.git.source(), replace=True)
        return json_response({"id": disk_id})

    @app.post("/v1/disks/<disk_id>/snapshots")
    async def snapshot(disk_id: str) -> Response:
        _check(disk_id)
        body = await parse_body(SnapshotBody)
        frozen = await disks.snapshot(disk_id, body.id, body.force)
        return json_response({"id": body.id, "frozen": frozen}, status=201)

    @app.delete("/v1/disks/<disk_id>/snapshots/<snapshot_id>")
    async def delete_snapshot(disk_id: str, snapshot_id: str) -> Response:
        _check(disk_id, snapshot_id)
        await disks.delete_snapshot(disk_id, snapshot_id)
        return Response(b"", status=204)

    @app.post("/v1/disks/<disk_id>/restore")
    async def restore(disk_id: str) -> Response:
        _check(disk_id)
        body = await parse_body(RestoreBody)
        await disks.restore(disk_id, body.snapshot)
        return json_response({"id": disk_id})
