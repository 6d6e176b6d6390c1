"""Workspaces: named persistent disks, their snapshots, templates, clones and imports.

The scheduler keeps which workspaces exist and whose they are; the host
holding a disk keeps the disk and guards it (one holder at a time, one
operation at a time). Work that changes a disk runs in this service's
nursery, not in the request's task, so a client hanging up cannot cut it
off half-way.

A workspace is born ``creating`` (its name taken from the start) and becomes
``ready`` once its host has made the disk; if that fails, nothing of it
stays. Deleting makes it ``deleting`` (hidden, its name free at once) until
its host confirms the disk is gone. The sweep finishes both after a crash:
creates past their deadline are undone, deletions retried.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import trio

from chaser.wire import errors
from chaser.wire.agent_api import ExecRequest
from scheduler import workspace_lookup
from scheduler.detached import run_detached
from scheduler.events import publish
from scheduler.gitsource import GitHost, Repository
from scheduler.placement import registry_reference
from scheduler.sessions import DEFAULT_IMAGE, SessionService
from scheduler.store import Row
from scheduler.store import workspaces as workspace_db
from scheduler.timefmt import rfc3339

log = logging.getLogger(__name__)

# Slack past a create's deadline before the sweep calls it abandoned: the
# request's own cleanup runs first.
_ABANDON_AFTER = 60.0
# Disk operations that are metadata only (delete a file, a reflink).
_QUICK_TIMEOUT = 60.0


class WorkspaceService:
    def __init__(self, sessions: SessionService) -> None:
        self.sessions = sessions
        self.store = sessions.store
        self.agents = sessions.agents
        self.config = sessions.config
        self.git = GitHost(self.config.git_base_url)
        self.disk_size = self.config.workspace_disk_gb << 30
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the disk work in flight and the sweep."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sweep_forever)
            task_status.started()

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None, "WorkspaceService.run has not started"
        return self._nursery

    # -- presentation -----------------------------------------------------

    def to_json(self, row: Row, holder: Row | None) -> dict[str, Any]:
        source = None
        if row["source_repository"] is not None:
            repository = self.git.resolve(row["source_repository"])
            source = {"repository": repository.path, "ref": row["source_ref"], "url": repository.url}
        cloned_from = None
        if row["cloned_from"] is not None:
            cloned_from = {"workspace": row["cloned_from"], "snapshot": row["cloned_from_snapshot"]}
        return {
            "id": row["id"],
            "name": row["name"],
            "session_type": row["session_type"],
            "image": row["image"],
            "is_template": row["is_template"],
            "status": row["status"],
            "attached_session": holder["id"] if holder is not None else None,
            "source": source,
            "cloned_from": cloned_from,
            "disk_size_bytes": row["disk_size_bytes"],
            "created_at": rfc3339(row["created_at"]),
            "updated_at": rfc3339(row["updated_at"]),
            "last_used_at": rfc3339(row["last_used_at"]),
        }

    @staticmethod
    def snapshot_json(row: Row) -> dict[str, Any]:
        return {
            "id": row["id"],
            "workspace": row["workspace_id"],
            "name": row["name"],
            "status": row["status"],
            # Taken with a session attached, its filesystem frozen meanwhile.
            "taken_while_attached": row["frozen"],
            "created_at": rfc3339(row["created_at"]),
        }

    async def render(self, row: Row) -> dict[str, Any]:
        return self.to_json(row, await self.store.run(workspace_db.holder, self.store, row["id"]))

    async def render_all(self, rows: list[Row]) -> list[dict[str, Any]]:
        holders = await self.store.run(workspace_db.holders, self.store, [r["id"] for r in rows])
        return [self.to_json(r, holders.get(r["id"])) for r in rows]

    # -- lookups ----------------------------------------------------------

    async def resolve(self, account_id: str, selector: str) -> Row:
        return await workspace_lookup.resolve(self.store, account_id, selector)

    async def list_page(self, account_id: str, *, template: bool | None, limit: int, after: str | None) -> list[Row]:
        """The account's workspaces by name; ``after`` is the lower-cased name last seen."""
        return await self.store.run(
            workspace_db.list_for, self.store, account_id, template=template, limit=limit, after=after
        )

    async def _ready(self, account_id: str, selector: str) -> Row:
        row = await self.resolve(account_id, selector)
        if row["status"] != "ready":
            raise errors.Conflict(f"workspace {row['name']!r} is {row['status']}", code="workspace_not_ready")
        return row

    async def _host_url(self, host_id: str) -> str:
        host = await self.store.run(self.store.host, host_id)
        if host is None or host["last_heartbeat"] < time.time() - self.config.heartbeat_timeout:
            raise errors.Unavailable(
                f"host {host_id} holding the workspace is not available", code="workspace_host_down"
            )
        return str(host["url"])

    async def _free_of_sessions(self, workspace: Row, force: bool, doing: str) -> None:
        """Ensure no session holds the workspace: 409 naming it, or (force) terminate it."""
        holder = await self.store.run(workspace_db.holder, self.store, workspace["id"])
        if holder is None:
            return
        if not force:
            raise errors.Conflict(
                f"workspace {workspace['name']!r} is in use by session {holder['id']}; "
                f"pass force=true to terminate it and {doing}",
                code="workspace_in_use",
            )
        await self.sessions.terminate(holder["account_id"], holder["id"], force=True, reason=f"forced to {doing}")

    async def _refuse_if_attached(self, workspace: Row, force: bool, doing: str) -> None:
        """A snapshot or clone of an attached workspace needs force (it is then taken frozen)."""
        holder = await self.store.run(workspace_db.holder, self.store, workspace["id"])
        if holder is not None and not force:
            raise errors.Conflict(
                f"workspace {workspace['name']!r} is in use by session {holder['id']}; "
                f"pass force=true to {doing} with its filesystem frozen",
                code="workspace_in_use",
            )

    # -- placement --------------------------------------------------------

    async def _place(self, session_type: str, image: str | None, *, needs_egress: bool = False) -> str:
        """The host for a new disk: able to run its sessions, most free space.

        ``needs_egress``: only a host whose sandboxes reach outside networks
        (an import clones from a sandbox).
        """
        heard_since = time.time() - self.config.heartbeat_timeout
        pools = await self.store.run(workspace_db.hosts_with_storage, self.store, heard_since)
        if not pools:
            raise errors.Unavailable("no host has a storage pool for workspaces", code="no_storage")
        if session_type == "sandbox":
            able = [h for h in pools if "sandbox" in h["session_types"] and _runs(h, image)]
            if not able:
                known = sorted({i for h in pools for i in h["images"]})
                raise errors.InvalidInput(
                    f"unknown image {image!r}; available: {', '.join(known) or 'none'}", code="unknown_image"
                )
            pools = able
        if needs_egress:
            pools = [h for h in pools if h["egress"]]
            if not pools:
                raise errors.Unavailable(
                    "no host with a storage pool gives sandboxes network egress, which an import clones through; "
                    "configure an uplink on a host",
                    code="no_egress",
                )
        # Browser workspaces may exist before any host runs browsers: prefer one that does.
        best = min(pools, key=lambda h: (session_type not in h["session_types"], -h["free_bytes"], h["id"]))
        return str(best["id"])

    # -- create, import, clone --------------------------------------------

    def _new_row(self, account_id: str, name: str, host_id: str, **values: Any) -> Row:
        now = time.time()
        row: Row = {
            "id": str(uuid.uuid4()),
            "account_id": account_id,
            "name": name,
            "name_key": name.lower(),
            "session_type": "sandbox",
            "image": None,
            "host_id": host_id,
            "disk_size_bytes": self.disk_size,
            "is_template": False,
            "status": "creating",
            "source_repository": None,
            "source_ref": None,
            "cloned_from": None,
            "cloned_from_snapshot": None,
            "create_deadline": None,
            "created_at": now,
            "updated_at": now,
            "last_used_at": None,
        }
        return {**row, **values}

    async def _make(self, row: Row, disk_body: dict[str, Any], timeout: float) -> Row:
        """Insert ``row`` (creating), have its host make the disk, and return it ready.

        On any failure the disk (if made) and the row are removed before the
        error is raised; a crash in between is undone by the sweep.
        """
        row["create_deadline"] = time.time() + timeout
        await self.store.run(workspace_db.insert, self.store, row)
        ctx = {"account_id": row["account_id"]}

        async def make() -> None:
            try:
                url = await self._host_url(row["host_id"])
                with trio.fail_after(timeout):
                    await self.agents.create_disk(url, {"id": row["id"], **disk_body}, timeout=timeout)
            except BaseException as exc:
                with trio.CancelScope(shield=True):
                    await self.store.run(workspace_db.mark_deleting, self.store, row["id"])
                    await self._finish_delete(row, None)
                log.warning("workspace create failed: %s", getattr(exc, "message", repr(exc)), extra=ctx)
                if isinstance(exc, trio.TooSlowError):
                    raise errors.Timeout(f"the workspace disk was not made within {timeout:g}s") from None
                raise
            await self.store.run(workspace_db.transition, self.store, row["id"], "creating", status="ready",
                                 create_deadline=None)  # fmt: skip

        await run_detached(self.nursery, make)
        created = await self.store.run(workspace_db.get_any, self.store, row["id"])
        assert created is not None
        await publish(self.store, row["account_id"], "workspace.created", {"workspace": await self.render(created)})
        return created

    async def create(self, account_id: str, *, name: str, session_type: str, image: str | None) -> Row:
        if session_type == "sandbox":
            image = image or DEFAULT_IMAGE
        host_id = await self._place(session_type, image)
        row = self._new_row(account_id, name, host_id, session_type=session_type, image=image)
        return await self._make(row, {"size_bytes": self.disk_size}, self.config.workspace_op_timeout)

    def _git_body(self, repository: Repository, ref: str | None, token: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"url": repository.url, "ref": ref}
        if token is not None:
            body["token"] = token
        return body

    async def import_repository(
        self,
        account_id: str,
        *,
        repository: str,
        ref: str | None,
        token: str | None,
        name: str | None,
        image: str | None,
    ) -> Row:
        """A new workspace holding a clone of ``repository``, named after it unless ``name``."""
        repo = self.git.resolve(repository)
        if name is None:
            try:
                name = workspace_lookup.check_name(repo.name)
            except ValueError as exc:
                raise errors.InvalidInput(f"name: {exc}; give the workspace a name", code="invalid_name") from None
        image = image or DEFAULT_IMAGE
        host_id = await self._place("sandbox", image, needs_egress=True)
        row = self._new_row(account_id, name, host_id, image=image, source_repository=repo.path, source_ref=ref)
        body = {"size_bytes": self.disk_size, "git": self._git_body(repo, ref, token)}
        return await self._make(row, body, self.config.import_timeout)

    async def clone(self, account_id: str, selector: str, *, name: str, snapshot_id: str | None, force: bool) -> Row:
        template = await self._ready(account_id, selector)
        if not template["is_template"]:
            raise errors.Conflict(
                f"workspace {template['name']!r} is not a template; set is_template first", code="not_a_template"
            )
        if snapshot_id is not None:
            await self._snapshot_of(template, snapshot_id)
        else:
            await self._refuse_if_attached(template, force, "clone it")
        row = self._new_row(
            account_id,
            name,
            template["host_id"],
            session_type=template["session_type"],
            image=template["image"],
            disk_size_bytes=template["disk_size_bytes"],
            cloned_from=template["id"],
            cloned_from_snapshot=snapshot_id,
        )
        source = {"disk": template["id"], "snapshot": snapshot_id, "force": force}
        return await self._make(
            row, {"size_bytes": template["disk_size_bytes"], "source": source}, self.config.workspace_op_timeout
        )

    async def rebootstrap(self, account_id: str, selector: str, *, token: str | None, force: bool) -> Row:
        """Re-clone an imported workspace's repository onto a fresh disk, replacing the old one."""
        row = await self._ready(account_id, selector)
        if row["source_repository"] is None:
            raise errors.Conflict(f"workspace {row['name']!r} was not imported from a repository", code="not_imported")
        repo = self.git.resolve(row["source_repository"])
        await self._free_of_sessions(row, force, "re-import it")
        url = await self._host_url(row["host_id"])
        git = self._git_body(repo, row["source_ref"], token)
        timeout = self.config.import_timeout

        async def reimport() -> None:
            with trio.fail_after(timeout):
                await self.agents.reimport_disk(url, row["id"], row["disk_size_bytes"], git, timeout=timeout)
            await self.store.run(workspace_db.transition, self.store, row["id"], "ready")

        await run_detached(self.nursery, reimport)
        return await self.resolve(account_id, row["id"])

    # -- update, delete ---------------------------------------------------

    async def update(self, account_id: str, selector: str, *, name: str | None, is_template: bool | None) -> Row:
        row = await self.resolve(account_id, selector)
        await self.store.run(workspace_db.update, self.store, row, name=name, is_template=is_template)
        return await self.resolve(account_id, row["id"])

    async def delete(self, account_id: str, selector: str, *, force: bool) -> None:
        row = await self.resolve(account_id, selector)
        holder = await self.store.run(workspace_db.begin_delete, self.store, row, force)
        # Gone from the API from here on (its name is free): that is the event.
        gone = {"id": row["id"], "name": row["name"], "session_type": row["session_type"]}
        await publish(self.store, account_id, "workspace.deleted", {"workspace": gone})
        await run_detached(self.nursery, lambda: self._finish_delete(row, holder))

    async def _finish_delete(self, row: Row, holder: Row | None) -> None:
        """End the holder, remove the disk, then the row; what fails is retried by the sweep."""
        if holder is not None:
            await self.sessions.terminate(
                holder["account_id"], holder["id"], force=True, reason="its workspace was deleted"
            )
        if await self._remove_disk_quietly(row):
            await self.store.run(workspace_db.delete, self.store, row["id"])

    async def _remove_disk_quietly(self, row: Row) -> bool:
        """Ask the host to delete the disk; False (and a log line) if it could not."""
        try:
            url = await self._host_url(row["host_id"])
            with trio.fail_after(_QUICK_TIMEOUT):
                await self.agents.delete_disk(url, row["id"], timeout=_QUICK_TIMEOUT)
        except (errors.ApiError, trio.TooSlowError) as exc:
            log.warning("disk %s not removed yet, the sweep retries: %s", row["id"], getattr(exc, "message", exc))
            return False
        return True

    # -- snapshots --------------------------------------------------------

    async def _snapshot_of(self, workspace: Row, snapshot_id: str) -> Row:
        snapshot = await self.store.run(workspace_db.snapshot, self.store, workspace["id"], snapshot_id)
        if snapshot is None or snapshot["status"] != "ready":
            raise errors.NotFound(
                f"snapshot {snapshot_id} not found in workspace {workspace['name']!r}", code="snapshot_not_found"
            )
        return snapshot

    async def snapshot(self, account_id: str, selector: str, *, name: str | None, force: bool) -> Row:
        workspace = await self._ready(account_id, selector)
        await self._refuse_if_attached(workspace, force, "snapshot it")
        url = await self._host_url(workspace["host_id"])
        timeout = self.config.workspace_op_timeout
        now = time.time()
        row: Row = {
            "id": str(uuid.uuid4()),
            "workspace_id": workspace["id"],
            "name": name,
            "status": "creating",
            "frozen": False,
            "create_deadline": now + timeout,
            "created_at": now,
        }
        await self.store.run(workspace_db.insert_snapshot, self.store, row)

        async def take() -> bool:
            try:
                with trio.fail_after(timeout):
                    return await self.agents.snapshot_disk(url, workspace["id"], row["id"], force, timeout=timeout)
            except BaseException as exc:
                with trio.CancelScope(shield=True):
                    await self._remove_snapshot_quietly(url, workspace["id"], row["id"])
                if isinstance(exc, trio.TooSlowError):
                    raise errors.Timeout(f"the snapshot was not taken within {timeout:g}s") from None
                raise

        frozen = await run_detached(self.nursery, take)
        await self.store.run(workspace_db.finish_snapshot, self.store, row["id"], frozen)
        ready = {**row, "status": "ready", "frozen": frozen, "create_deadline": None}
        await publish(self.store, account_id, "snapshot.created", {"snapshot": self.snapshot_json(ready)})
        return ready

    async def _remove_snapshot_quietly(self, url: str, workspace_id: str, snapshot_id: str) -> None:
        try:
            await self.agents.delete_snapshot(url, workspace_id, snapshot_id, timeout=_QUICK_TIMEOUT)
        except errors.ApiError as exc:
            log.warning("snapshot %s not removed yet, the sweep retries: %s", snapshot_id, exc.message)
            return
        await self.store.run(workspace_db.delete_snapshot, self.store, snapshot_id)

    async def snapshots(self, account_id: str, selector: str) -> list[Row]:
        workspace = await self.resolve(account_id, selector)
        rows = await self.store.run(workspace_db.snapshots_of, self.store, workspace["id"])
        return [r for r in rows if r["status"] == "ready"]

    async def get_snapshot(self, account_id: str, selector: str, snapshot_id: str) -> Row:
        return await self._snapshot_of(await self.resolve(account_id, selector), snapshot_id)

    async def restore(self, account_id: str, selector: str, snapshot_id: str, *, force: bool) -> Row:
        workspace = await self._ready(account_id, selector)
        await self._snapshot_of(workspace, snapshot_id)
        await self._free_of_sessions(workspace, force, "restore it")
        url = await self._host_url(workspace["host_id"])
        timeout = self.config.workspace_op_timeout

        async def restore() -> None:
            with trio.fail_after(timeout):
                await self.agents.restore_disk(url, workspace["id"], snapshot_id, timeout=timeout)
            await self.store.run(workspace_db.transition, self.store, workspace["id"], "ready")

        await run_detached(self.nursery, restore)
        return await self.resolve(account_id, workspace["id"])

    async def delete_snapshot(self, account_id: str, selector: str, snapshot_id: str) -> None:
        workspace = await self.resolve(account_id, selector)
        await self._snapshot_of(workspace, snapshot_id)
        url = await self._host_url(workspace["host_id"])

        async def remove() -> None:
            await self.agents.delete_snapshot(url, workspace["id"], snapshot_id, timeout=_QUICK_TIMEOUT)
            await self.store.run(workspace_db.delete_snapshot, self.store, snapshot_id)

        await run_detached(self.nursery, remove)

    # -- exec -------------------------------------------------------------

    async def exec_on(self, account_id: str, selector: str, request: ExecRequest, timeout: float) -> dict[str, Any]:
        """Run in the session attached to the workspace, or in a one-shot session on it."""
        workspace = await self.resolve(account_id, selector)
        holder = await self.store.run(workspace_db.holder, self.store, workspace["id"])
        if holder is not None:
            result = await self.sessions.exec_in(holder, request, timeout)
            return {**result, "session_id": holder["id"]}
        session = await self.sessions.create(
            account_id, session_type="sandbox", ephemeral=False, workspace=workspace["id"], image=None
        )
        try:
            result = await self.sessions.exec_in(session, request, timeout)
        finally:
            with trio.CancelScope(shield=True):
                await self.sessions.terminate(account_id, session["id"], force=True, reason="one-shot exec finished")
        return {**result, "session_id": session["id"]}

    # -- hosts, reconciliation --------------------------------------------

    async def on_heartbeat(self, host_id: str, storage: dict[str, Any] | None) -> None:
        if storage is not None:
            await self.store.run(workspace_db.upsert_storage, self.store, host_id, storage)

    async def sweep(self) -> None:
        """Undo creates a crash abandoned; retry deletions whose host was away."""
        now = time.time()
        heard_since = now - self.config.heartbeat_timeout
        for row in await self.store.run(workspace_db.overdue_creates, self.store, now - _ABANDON_AFTER):
            log.warning("undoing abandoned workspace create", extra={"account_id": row["account_id"]})
            await self.store.run(workspace_db.mark_deleting, self.store, row["id"])
        for row in await self.store.run(workspace_db.deleting, self.store):
            if row["last_heartbeat"] is not None and row["last_heartbeat"] > heard_since:
                await self._finish_delete(row, await self.store.run(workspace_db.holder, self.store, row["id"]))
        for snap in await self.store.run(workspace_db.overdue_snapshots, self.store, now - _ABANDON_AFTER):
            try:
                url = await self._host_url(snap["host_id"])
            except errors.Unavailable:
                continue
            await self._remove_snapshot_quietly(url, snap["workspace_id"], snap["id"])

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("workspace sweep failed")
            await trio.sleep(self.config.reconcile_interval)


def _runs(host: Row, image: str | None) -> bool:
    """Whether the host has the built-in image, or pulls registry images and ``image`` is one."""
    if image in host["images"]:
        return True
    return bool(host.get("pulls_images")) and image is not None and registry_reference(image) is not None
