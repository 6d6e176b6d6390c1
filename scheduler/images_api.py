"""``/v1/images``: registry images pulled ahead of time, what the hosts hold, and removing them.

``POST /v1/images {"reference"}`` starts a pull on one host that pulls
images (one already holding it first, else the one with the most room:
sessions of that image then go there, placement preferring holders) and
answers 202 at once with a pull resource; ``GET /v1/images/{id}`` shows
how far it is (layers and bytes fetched, then unpacking) and how it ended,
with the same error codes a session create would give. The pull runs on
the host, followed here in the sessions' background nursery; a pull whose
follower was lost (a scheduler restart) is refreshed from its host when read.

``GET /v1/images`` lists what the hosts hold that this account may use
(images pulled without a login, and private ones it showed the registry it
may read); ``DELETE /v1/images/{digest}`` removes one from every host
holding it, refused with 409 while a session runs it.

Scopes: ``workspaces.write`` / ``workspaces.read`` (the seeds have no
``images.*``), as for registry credentials.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Annotated, Any

import sqlalchemy as sa
import trio
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from quart import Response
from quart_trio import QuartTrio

from chaser.wire import errors
from chaser.wire.image_reference import DIGEST, BadReference, parse_reference
from scheduler.access import audit_resource, principal, requires
from scheduler.models import StrictBody, path_id
from scheduler.placement import HostLoad
from scheduler.sessions import SessionService
from scheduler.store import Row
from scheduler.store.schema import image_pulls as table
from scheduler.timefmt import rfc3339
from serving.quart_json import json_response, parse_body

log = logging.getLogger(__name__)

_POLL = 0.3
_HOST_TIMEOUT = 10.0
# A host that cannot be asked about its pull for this long fails it.
_LOST_AFTER = 60.0
# A pull row not refreshed for this long has lost its follower: reads refresh it.
_STALE = 5.0


class PullImageBody(StrictBody):
    reference: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class HostPull(BaseModel):
    """A host's answer about one pull (``agent/image_api.py``), checked before it is stored."""

    model_config = ConfigDict(extra="ignore")

    class Progress(BaseModel):
        model_config = ConfigDict(extra="ignore")
        phase: str = Field(max_length=16)
        layers_total: int = Field(ge=0)
        layers_done: int = Field(ge=0)
        bytes_total: int = Field(ge=0)
        bytes_done: int = Field(ge=0)

    status: str = Field(pattern="^(pulling|succeeded|failed)$")
    progress: Progress
    digest: str | None = Field(default=None, max_length=80)
    size: int | None = None
    fetched_bytes: int | None = None
    error: dict[str, Any] | None = None

    def row_values(self) -> Row:
        error = None
        if self.error is not None:
            error = {"code": str(self.error.get("code"))[:64], "message": str(self.error.get("message"))[:1000]}
        return {
            "status": self.status,
            "phase": self.progress.phase,
            "layers_total": self.progress.layers_total,
            "layers_done": self.progress.layers_done,
            "bytes_total": self.progress.bytes_total,
            "bytes_done": self.progress.bytes_done,
            "digest": self.digest,
            "size": self.size,
            "fetched_bytes": self.fetched_bytes,
            "error": error,
            "updated_at": time.time(),
            "finished_at": time.time() if self.status != "pulling" else None,
        }


def pull_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "reference": row["reference"],
        "status": row["status"],
        "digest": row["digest"],
        "size": row["size"],
        "progress": {
            "phase": row["phase"],
            "layers_done": row["layers_done"],
            "layers_total": row["layers_total"],
            "bytes_done": row["bytes_done"],
            "bytes_total": row["bytes_total"],
        },
        "fetched_bytes": row["fetched_bytes"],
        "error": row["error"],
        "created_at": rfc3339(row["created_at"]),
        "finished_at": rfc3339(row["finished_at"]),
    }


class ImageService:
    def __init__(self, sessions: SessionService) -> None:
        self.sessions = sessions
        self.store = sessions.store
        self.agents = sessions.agents

    # -- blocking queries ---------------------------------------------------

    def _insert(self, row: Row) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(table.insert().values(**row))

    def _update(self, pull_id: str, values: Row) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(table.update().where(table.c.id == pull_id, table.c.status == "pulling").values(**values))

    def _get(self, account_id: str, pull_id: str) -> Row | None:
        query = sa.select(table).where(table.c.account_id == account_id, table.c.id == pull_id)
        with self.store.engine.connect() as conn:
            found = conn.execute(query).mappings().first()
        return dict(found) if found else None

    # -- pulls ----------------------------------------------------------------

    async def _pulling_hosts(self, *, required: bool = True) -> list[HostLoad]:
        hosts = [h for h in await self.sessions._hosts() if h.healthy and h.pulls_images]
        if not hosts and required:
            raise errors.Unavailable("no host pulls registry images", code="no_host")
        return hosts

    async def start(self, account_id: str, text: str) -> Row:
        try:
            reference = parse_reference(text)
        except BadReference as exc:
            raise errors.InvalidInput(f"reference: {exc}", code="invalid_reference") from None
        hosts = await self._pulling_hosts()
        host = sorted(hosts, key=lambda h: (not h.holds(str(reference)), -h.free, h.id))[0]
        login = await self.sessions.registry_logins.login_for(account_id, str(reference))
        now = time.time()
        row: Row = {
            "id": str(uuid.uuid4()),
            "account_id": account_id,
            "reference": str(reference),
            "host_id": host.id,
            "status": "pulling",
            "phase": "resolving",
            "digest": None,
            "size": None,
            "layers_total": 0,
            "layers_done": 0,
            "bytes_total": 0,
            "bytes_done": 0,
            "fetched_bytes": None,
            "error": None,
            "created_at": now,
            "updated_at": now,
            "finished_at": None,
        }
        await self.store.run(self._insert, row)
        body: dict[str, Any] = {"id": row["id"], "reference": row["reference"], "account": account_id}
        if login is not None:
            body["registry_login"] = login.to_agent()
        try:
            started = await self.agents.start_pull(host.url, body, timeout=_HOST_TIMEOUT)
            row.update(HostPull.model_validate(started).row_values())
        except errors.ApiError as exc:
            row.update(status="failed", error={"code": exc.code, "message": exc.message}, finished_at=time.time())
        await self.store.run(self._update, row["id"], {k: v for k, v in row.items() if k != "id"})
        if row["status"] == "pulling":
            self.sessions.nursery.start_soon(self._follow, row["id"], host.url)
        return row

    async def _refresh(self, pull_id: str, host_url: str) -> bool:
        """Store what the host says of the pull now; False once it has ended."""
        answer = await self.agents.pull(host_url, pull_id, timeout=_HOST_TIMEOUT)
        values = HostPull.model_validate(answer).row_values()
        await self.store.run(self._update, pull_id, values)
        return bool(values["status"] == "pulling")

    async def _fail(self, pull_id: str, code: str, message: str) -> None:
        failed = {"status": "failed", "error": {"code": code, "message": message}, "finished_at": time.time()}
        await self.store.run(self._update, pull_id, failed)

    async def _follow(self, pull_id: str, host_url: str) -> None:
        unreachable_since: float | None = None
        while True:
            await trio.sleep(_POLL)
            try:
                if not await self._refresh(pull_id, host_url):
                    return
                unreachable_since = None
            except errors.NotFound:
                await self._fail(pull_id, "image_pull_lost", "the host no longer knows this pull (it restarted)")
                return
            except errors.ApiError as exc:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > _LOST_AFTER:
                    await self._fail(pull_id, "host_unreachable", f"the pull's host stopped answering: {exc.message}")
                    return
            except ValueError:  # the host's answer did not validate
                await self._fail(pull_id, "host_error", "the host answered about the pull in a form not understood")
                return

    async def get(self, account_id: str, pull_id: str) -> Row:
        row = await self.store.run(self._get, account_id, pull_id)
        if row is None:
            raise errors.NotFound(f"image pull {pull_id} not found", code="image_pull_not_found")
        if row["status"] == "pulling" and time.time() - row["updated_at"] > _STALE:
            host = await self.store.run(self.store.host, row["host_id"])
            try:
                if host is None:
                    raise errors.NotFound("host gone")
                await self._refresh(row["id"], host["url"])
            except errors.NotFound:
                await self._fail(row["id"], "image_pull_lost", "the pull's host no longer knows it")
            except (errors.ApiError, ValueError):
                pass  # the host is busy: the stored progress stands
            row = await self.store.run(self._get, account_id, pull_id) or row
        return row

    # -- what the hosts hold --------------------------------------------------

    async def _held(self, account_id: str) -> dict[str, tuple[dict[str, Any], list[HostLoad]]]:
        """Images usable by the account, by digest: a merged view, and the hosts holding each."""
        found: dict[str, tuple[dict[str, Any], list[HostLoad]]] = {}
        for host in await self._pulling_hosts(required=False):
            try:
                answer = await self.agents.images(host.url, timeout=_HOST_TIMEOUT)
            except errors.ApiError as exc:
                log.warning("host %s did not list its images: %s", host.id, exc.message)
                continue
            for image in answer.get("images", []):
                if not (image.get("public") or account_id in image.get("accounts", [])):
                    continue
                seen, holders = found.get(image["digest"], ({}, []))
                merged = {
                    "digest": image["digest"],
                    "references": sorted(set(seen.get("references", [])) | set(image.get("references", []))),
                    "size": image.get("size"),
                    "last_used": max(seen.get("last_used", 0.0), float(image.get("last_used") or 0.0)),
                    "in_use": bool(seen.get("in_use")) or bool(image.get("in_use")),
                }
                found[image["digest"]] = (merged, [*holders, host])
        return found

    async def held(self, account_id: str) -> list[dict[str, Any]]:
        images = []
        for merged, holders in (await self._held(account_id)).values():
            # How many hosts hold it, not which: host names are the operator's business.
            images.append({**merged, "last_used": rfc3339(merged["last_used"]), "hosts": len(holders)})
        return sorted(images, key=lambda i: i["last_used"] or "", reverse=True)

    async def delete(self, account_id: str, digest: str) -> None:
        missing = errors.NotFound(f"image {digest} not found on any host", code="image_not_found")
        if not DIGEST.fullmatch(digest):
            raise missing
        found = (await self._held(account_id)).get(digest)
        if found is None:
            raise missing
        for host in found[1]:
            try:
                await self.agents.delete_image(host.url, digest, timeout=_HOST_TIMEOUT)
            except errors.NotFound:
                continue  # removed meanwhile


def register_image_routes(app: QuartTrio, images: ImageService) -> None:
    @app.post("/v1/images")
    @requires("workspaces.write", action="image.pull", resource="image")
    async def pull_image() -> Response:
        body = await parse_body(PullImageBody)
        row = await images.start(principal().account_id, body.reference)
        audit_resource(row["id"])
        return json_response(pull_json(row), status=202)

    @app.get("/v1/images")
    @requires("workspaces.read", action="image.list", resource="image")
    async def list_images() -> Response:
        return json_response({"images": await images.held(principal().account_id)})

    @app.get("/v1/images/<raw_id>")
    @requires("workspaces.read", action="image.get", resource="image")
    async def get_image_pull(raw_id: str) -> Response:
        row = await images.get(principal().account_id, path_id(raw_id, "image pull"))
        return json_response(pull_json(row))

    @app.delete("/v1/images/<digest>")
    @requires("workspaces.write", action="image.delete", resource="image")
    async def delete_image(digest: str) -> Response:
        await images.delete(principal().account_id, digest)
        audit_resource(digest)
        return Response(b"", status=204)
