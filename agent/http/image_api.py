"""The agent's image routes: pulls ahead of time with progress, what the store holds, removal, GC.

``POST /v1/images/pulls`` starts a pull in the agent's own nursery (a
scheduler that hangs up does not cut it short) and answers at once; the
scheduler follows it with ``GET /v1/images/pulls/{id}``. Finished pulls
are remembered for a while, then forgotten. The store is also collected
by last use (``agent/registry/collect.py``) every ``gc_interval`` and
after each pull.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Annotated

import trio
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from quart import Response
from quart_trio import QuartTrio

from agent.registry import collect
from agent.registry.skopeo import Credentials
from agent.registry.store import LayerStore, PullProgress
from agent.sandboxes.manager import SandboxManager
from chaser.wire import errors
from chaser.wire.image_reference import DIGEST, BadReference, parse_reference
from serving.quart_json import json_response, parse_body

log = logging.getLogger(__name__)

PullId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
_KEPT_FOR = 3600.0  # a finished pull's outcome is kept this long
_MAX_PULLS = 256


class _Login(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    username: str = Field(max_length=1024)
    password: str = Field(max_length=16384)


class StartPull(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: PullId
    reference: str = Field(min_length=1, max_length=256)
    account: str | None = Field(default=None, max_length=64)
    registry_login: _Login | None = None


@dataclass
class Pull:
    id: str
    reference: str
    account: str | None
    status: str = "pulling"  # pulling | succeeded | failed
    progress: PullProgress = field(default_factory=PullProgress)
    digest: str | None = None
    size: int | None = None
    fetched_layers: int | None = None
    fetched_bytes: int | None = None
    error: dict[str, object] | None = None
    finished_at: float | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class ImagePulls:
    """Pulls in flight and lately finished, and the store's periodic collection."""

    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager
        self._pulls: dict[str, Pull] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def store(self) -> LayerStore:
        if self.manager.images.registry is None:
            raise errors.Unavailable("this host pulls no registry images", code="registry_images_off")
        return self.manager.images.registry

    def running_digests(self) -> set[str]:
        """Images a sandbox here runs (starting, running, paused): never removed."""
        return {s.image_digest for s in self.manager.sandboxes() if s.image_digest is not None}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            registry = self.manager.images.registry
            if registry is None:
                await trio.sleep_forever()
            assert registry is not None
            while True:
                await trio.sleep(registry.config.gc_interval)
                await self.collect()

    async def collect(self, budget: int | None = None) -> collect.Collected:
        return await collect.collect(self.store, self.running_digests(), budget)

    def start(self, body: StartPull) -> Pull:
        store = self.store
        if body.id in self._pulls:
            return self._pulls[body.id]
        try:
            reference = parse_reference(body.reference)
        except BadReference as exc:
            raise errors.InvalidInput(f"reference: {exc}", code="invalid_reference") from None
        self._forget_old()
        if sum(p.status == "pulling" for p in self._pulls.values()) >= _MAX_PULLS:
            raise errors.Unavailable("too many pulls in flight on this host", code="too_many_pulls")
        pull = Pull(body.id, str(reference), body.account)
        self._pulls[body.id] = pull
        login = body.registry_login
        credentials = Credentials(login.username, login.password) if login is not None else None
        assert self._nursery is not None
        self._nursery.start_soon(self._pull, store, pull, credentials)
        return pull

    async def _pull(self, store: LayerStore, pull: Pull, credentials: Credentials | None) -> None:
        try:
            report = await store.pull(parse_reference(pull.reference), credentials, pull.account, pull.progress)
        except errors.ApiError as exc:
            pull.status, pull.error = "failed", {"code": exc.code, "message": exc.message, "status": exc.status}
        except Exception:
            log.exception("pull of %s failed", pull.reference)
            pull.status = "failed"
            pull.error = {"code": "internal_error", "message": "the pull failed on the host", "status": 500}
        else:
            pull.status, pull.digest, pull.size = "succeeded", report.image.digest, report.image.size
            pull.fetched_layers, pull.fetched_bytes = report.fetched_layers, report.fetched_bytes
            await self.collect()
        finally:
            pull.finished_at = time.time()

    def _forget_old(self) -> None:
        now = time.time()
        for pull_id, pull in list(self._pulls.items()):
            if pull.finished_at is not None and now - pull.finished_at > _KEPT_FOR:
                del self._pulls[pull_id]

    def get(self, pull_id: str) -> Pull:
        try:
            return self._pulls[pull_id]
        except KeyError:
            raise errors.NotFound(f"pull {pull_id} not found", code="image_pull_not_found") from None

    def held(self) -> list[dict[str, object]]:
        running = self.running_digests()
        return [
            {
                "digest": image.digest,
                "references": list(image.references),
                "size": image.size,
                "last_used": image.last_used,
                "public": image.public,
                "accounts": list(image.accounts),
                "in_use": image.digest in running,
            }
            for image in sorted(self.store.images(), key=lambda i: -i.last_used)
        ]


def register_image_routes(app: QuartTrio, pulls: ImagePulls) -> None:
    @app.post("/v1/images/pulls")
    async def start_pull() -> Response:
        body = await parse_body(StartPull)
        return json_response(pulls.start(body).to_json(), status=202)

    @app.get("/v1/images/pulls/<pull_id>")
    async def get_pull(pull_id: str) -> Response:
        return json_response(pulls.get(pull_id).to_json())

    @app.get("/v1/images")
    async def list_images() -> Response:
        return json_response({"images": pulls.held()})

    @app.delete("/v1/images/<digest>")
    async def delete_image(digest: str) -> Response:
        if not DIGEST.fullmatch(digest):
            raise errors.NotFound(f"image {digest} is not on this host", code="image_not_found")
        result = await collect.delete_image(pulls.store, digest, pulls.running_digests())
        return json_response(asdict(result))
