"""File transfer and file operations in a sandbox, streamed both ways.

    GET    files/<path>                 download a regular file
    GET    files/<path>?archive=tar     a tar stream of a directory (or file)
    PUT    files/<path>[?parents]       upload; replaces the file atomically on success
    PUT    files/<path>?archive=tar     extract a tar stream into directory <path>
    DELETE files/<path>[?recursive]     remove a file, a link or a directory
    GET    fs/stat/<path>               metadata (symlinks not followed)
    GET    fs/list/<path>[?limit=N]     a directory's entries
    POST   fs/mkdir/<path>[?parents]    create a directory
    POST   fs/rename                    {"from": ..., "to": ..., "overwrite": false}

Bodies are never held whole: an upload is written chunk by chunk as
hypercorn delivers it (its bounded queue slows a client that sends faster
than the disk takes), a download is read chunk by chunk as the client
takes it. An upload cut off half-way leaves the old file untouched.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable
from email.utils import formatdate
from typing import Annotated, TypeVar

import trio
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from agent.endpoints.asgi import Receive, Scope, Send, flag, query, read_json, send_json
from agent.endpoints.failures import api_error
from agent.endpoints.paths import sandbox_path
from agent.runtimes.base import Process, Runtime, RuntimeFailure
from agent.sandboxes.lease_keeper import LeaseKeeper
from agent.sandboxes.manager import SandboxManager
from chaser.wire import errors
from serving.quart_json import validation_error

T = TypeVar("T")

_CHUNK = 1 << 20
_ERROR_TAIL = 4096
MAX_LIST = 10_000


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(alias="from")
    target: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(alias="to")
    overwrite: bool = False


class Files:
    def __init__(self, manager: SandboxManager, keeper: LeaseKeeper) -> None:
        self.manager = manager
        self.keeper = keeper

    @property
    def runtime(self) -> Runtime:
        return self.manager.runtime

    async def handle(self, scope: Scope, receive: Receive, send: Send, sandbox_id: str, rest: str) -> None:
        """``rest`` is the decoded path after ``/v1/sandboxes/<id>/``: ``files/...`` or ``fs/...``."""
        self.manager.running(sandbox_id)
        self.keeper.touch(sandbox_id)
        method = scope["method"]
        kind, _, tail = rest.partition("/")
        try:
            if kind == "files":
                await self._files(scope, receive, send, sandbox_id, method, sandbox_path("/" + tail))
            elif (match := re.fullmatch(r"(stat|list|mkdir)/(.*)", tail, re.DOTALL)) is not None:
                await self._fs(scope, send, sandbox_id, method, match[1], sandbox_path("/" + match[2]))
            elif tail == "rename" and method == "POST":
                query(scope, ())
                await self._rename(receive, send, sandbox_id)
            else:
                raise errors.NotFound(f"no file operation {tail!r}", code="not_found")
        except RuntimeFailure as exc:
            raise api_error(exc, sandbox_id) from None
        finally:
            self.keeper.touch(sandbox_id)

    async def _files(self, scope: Scope, receive: Receive, send: Send, sandbox_id: str, method: str, path: str) -> None:
        if method in ("GET", "HEAD"):
            params = query(scope, ("archive",))
            if params.get("archive") == "tar":
                await self._download_tar(send, sandbox_id, path)
            elif "archive" in params:
                raise errors.InvalidInput("archive must be tar", code="invalid_request")
            else:
                await self._download(send, sandbox_id, path, head=method == "HEAD")
        elif method == "PUT":
            params = query(scope, ("archive", "parents"))
            if params.get("archive") == "tar":
                await self._upload_tar(receive, send, sandbox_id, path)
            elif "archive" in params:
                raise errors.InvalidInput("archive must be tar", code="invalid_request")
            else:
                await self._upload(receive, send, sandbox_id, path, parents=flag(params, "parents"))
        elif method == "DELETE":
            params = query(scope, ("recursive",))
            await self._wrap(self.runtime.remove(sandbox_id, path, recursive=flag(params, "recursive")), path)
            await send_json(send, 200, {"path": path, "removed": True})
        else:
            raise errors.MethodNotAllowed(f"{method} is not allowed on files")

    async def _wrap(self, awaitable: Awaitable[T], path: str) -> T:
        """Await a runtime call; its failure as an API error naming ``path``."""
        try:
            return await awaitable
        except RuntimeFailure as exc:
            raise api_error(exc, "", path) from None

    async def _download(self, send: Send, sandbox_id: str, path: str, *, head: bool) -> None:
        reader = await self._wrap(self.runtime.open_file(sandbox_id, path), path)
        try:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(reader.size).encode()),
                (b"last-modified", formatdate(reader.mtime, usegmt=True).encode()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            remaining = 0 if head else reader.size
            # Exactly the size announced, even if the file changes meanwhile.
            while remaining > 0:
                chunk = await reader.read(min(_CHUNK, remaining))
                if not chunk:
                    raise errors.Conflict(f"{path} shrank while it was read", code="file_changed")
                remaining -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
            if head or reader.size == 0:
                await send({"type": "http.response.body", "body": b""})
        finally:
            await reader.aclose()

    async def _upload(self, receive: Receive, send: Send, sandbox_id: str, path: str, *, parents: bool) -> None:
        writer = await self._wrap(self.runtime.create_file(sandbox_id, path, parents=parents), path)
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise errors.MalformedBody("the client went away mid-upload; nothing was written")
                chunk = message.get("body", b"")
                if chunk:
                    await writer.write(chunk)
                    size += len(chunk)
                if not message.get("more_body", False):
                    break
            await self._wrap(writer.commit(), path)
        except BaseException:
            with contextlib.suppress(Exception):
                await writer.abort()
            raise
        info = await self._wrap(self.runtime.stat(sandbox_id, path), path)
        await send_json(send, 201, {**info.to_json(), "size": size})

    async def _download_tar(self, send: Send, sandbox_id: str, path: str) -> None:
        await self._wrap(self.runtime.stat(sandbox_id, path), path)  # a missing path is a clean 404
        process = await self._wrap(self.runtime.archive(sandbox_id, path), path)
        try:
            headers = [(b"content-type", b"application/x-tar")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            while chunk := await process.stdout.receive_some(_CHUNK):
                await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
            code = await process.wait()
            if code != 0:
                # Too late for a status: end the stream unfinished, so the
                # client sees a broken transfer, not a short archive.
                raise RuntimeError(f"archive of {path} failed: {await _error_tail(process)}")
            await send({"type": "http.response.body", "body": b""})
        finally:
            await _end(process)

    async def _upload_tar(self, receive: Receive, send: Send, sandbox_id: str, path: str) -> None:
        process = await self._wrap(self.runtime.extract(sandbox_id, path), path)
        assert process.stdin is not None
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise errors.MalformedBody("the client went away mid-upload")
                try:
                    await process.stdin.send_all(message.get("body", b""))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # extraction stopped (a refused member, a bad stream); its exit says why
                if not message.get("more_body", False):
                    break
            await process.stdin.aclose()
            code = await process.wait()
            if code != 0:
                raise errors.InvalidInput(f"{await _error_tail(process)}", code="invalid_archive")
        finally:
            await _end(process)
        await send_json(send, 200, {"path": path, "extracted": True})

    async def _fs(self, scope: Scope, send: Send, sandbox_id: str, method: str, op: str, path: str) -> None:
        if method != ("POST" if op == "mkdir" else "GET"):
            raise errors.MethodNotAllowed(f"{method} is not allowed on fs/{op}")
        if op == "stat":
            query(scope, ())
            info = await self._wrap(self.runtime.stat(sandbox_id, path), path)
            await send_json(send, 200, info.to_json())
        elif op == "list":
            params = query(scope, ("limit",))
            limit = _limit(params.get("limit"))
            entries, truncated = await self._wrap(self.runtime.list_dir(sandbox_id, path, limit), path)
            listing = [e.to_json() for e in entries]
            await send_json(send, 200, {"path": path, "entries": listing, "truncated": truncated})
        else:
            params = query(scope, ("parents",))
            await self._wrap(self.runtime.mkdir(sandbox_id, path, parents=flag(params, "parents")), path)
            await send_json(send, 201, {"path": path, "created": True})

    async def _rename(self, receive: Receive, send: Send, sandbox_id: str) -> None:
        data = await read_json(receive)
        if not isinstance(data, dict):
            raise errors.InvalidInput("request body must be a JSON object")
        try:
            body = RenameBody.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from None
        source, target = sandbox_path(body.source), sandbox_path(body.target)
        await self._wrap(self.runtime.rename(sandbox_id, source, target, overwrite=body.overwrite), source)
        await send_json(send, 200, {"from": source, "to": target})


def _limit(raw: str | None) -> int:
    if raw is None:
        return 1000
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST:
        raise errors.InvalidInput(f"limit must be between 1 and {MAX_LIST}", code="invalid_request")
    return int(raw)


async def _end(process: Process) -> None:
    """Kill (if still running), reap and release a process, whatever ended the request."""
    with trio.CancelScope(shield=True):
        process.kill()
        with trio.move_on_after(5):
            await process.wait()
        await process.aclose()


async def _error_tail(process: Process) -> str:
    if process.stderr is None:
        return "failed"
    data = bytearray()
    with contextlib.suppress(Exception):
        while len(data) < _ERROR_TAIL and (chunk := await process.stderr.receive_some(_ERROR_TAIL)):
            data += chunk
    return data.decode(errors="replace").strip()[-_ERROR_TAIL:] or "failed"
