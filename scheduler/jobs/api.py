"""The jobs routes of the public API (``/v1/jobs``).

Scopes follow the job's kind: creating, canceling or retrying a job needs
its kind's ``scope`` (``exec.write`` for sandbox.exec and pipeline.run,
``sessions.write`` for session kinds, ``workspaces.write`` for workspace
kinds); reading one needs that scope or the kind's ``read_scope``
(``sessions.read``, ``workspaces.read``), and a listing shows only the kinds
the key may read. The catalogue of kinds is open to any valid key.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from quart import Response
from quart_trio import QuartTrio

from chaser.wire import errors
from scheduler.access import audit_resource, principal, requires
from scheduler.jobs.kind import JobKind
from scheduler.jobs.service import JobService
from scheduler.pagination import decode_cursor, encode_cursor
from serving.quart_json import json_response, parse_body, parse_query, validation_error

# RFC 3339 date-time: a full date, a time, and an offset (Z or ±hh:mm).
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class CreateJobBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: str = Field(min_length=1, max_length=64)
    input: dict[str, Any] = Field(default_factory=dict)
    run_at: str | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


class ListJobsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str | None = None
    status: Literal["queued", "scheduled", "running", "succeeded", "failed", "canceled"] | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = None


def parse_run_at(text: str) -> float:
    """An RFC 3339 timestamp as UNIX seconds, or a 422 naming ``run_at``."""
    problem = errors.InvalidInput(
        f"run_at: {text!r} is not an RFC 3339 timestamp such as 2025-03-15T10:00:00Z", code="invalid_run_at"
    )
    if not _RFC3339.match(text):
        raise problem
    try:
        return datetime.fromisoformat(text.upper()).timestamp()
    except ValueError:
        raise problem from None


def _input_error(exc: ValidationError) -> errors.InvalidInput:
    """The kind's validation errors, located under ``input``."""
    details = [
        {**problem, "field": "input" if problem["field"] == "(body)" else f"input.{problem['field']}"}
        for problem in validation_error(exc).details
    ]
    return errors.InvalidInput(f"{details[0]['field']}: {details[0]['message']}", details=details)


def _may(scope: str) -> bool:
    try:
        principal().require(scope)
    except errors.Forbidden:
        return False
    return True


def _require_read(kind: JobKind[Any]) -> None:
    if not _may(kind.scope):
        principal().require(kind.read_scope)


def _job_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise errors.NotFound(f"job {raw} not found", code="job_not_found") from None


def register_job_routes(app: QuartTrio, jobs: JobService) -> None:
    async def owned(raw_id: str) -> tuple[dict[str, Any], JobKind[Any] | None]:
        row = await jobs.get(principal().account_id, _job_id(raw_id))
        return row, jobs.kinds().get(row["kind"])

    async def render(row: dict[str, Any]) -> dict[str, Any]:
        return jobs.to_json(row, await jobs.attempts(row["id"]))

    @app.get("/v1/jobs/kinds")
    @requires(None, action="job.kinds", resource="job")
    async def list_kinds() -> Response:
        # Any valid key: the catalogue says what the deployment offers, nothing about the account.
        kinds = [
            {
                "kind": kind.name,
                "description": kind.description,
                "scope": kind.scope,
                "input_schema": kind.input_schema(),
            }
            for kind in jobs.kinds().values()
        ]
        return json_response({"kinds": kinds})

    @app.post("/v1/jobs")
    @requires(None, action="job.create", resource="job")
    async def create_job() -> Response:  # scope: the kind's, checked once the kind is known
        body = await parse_body(CreateJobBody)
        kind = jobs.kind(body.kind)
        principal().require(kind.scope)
        try:
            data = kind.parse(body.input).model_dump(mode="json", exclude_none=True)
        except ValidationError as exc:
            raise _input_error(exc) from None
        run_at = parse_run_at(body.run_at) if body.run_at is not None else None
        caller = principal()
        row, created = await jobs.submit(
            caller.account_id,
            kind,
            data,
            run_at=run_at,
            idempotency_key=body.idempotency_key,
            creator_user_id=caller.user_id,
            creator_key_id=caller.key_id,
        )
        audit_resource(row["id"])
        return json_response(await render(row), status=201 if created else 200)

    @app.get("/v1/jobs")
    @requires(None, action="job.list", resource="job")
    async def list_jobs() -> Response:  # scope: each kind's read scope filters the listing
        query = parse_query(ListJobsQuery)
        readable = [k.name for k in jobs.kinds().values() if _may(k.scope) or _may(k.read_scope)]
        if query.kind is not None:
            readable = [k for k in readable if k == query.kind]
        after = decode_cursor(query.cursor, float, str) if query.cursor else None
        rows = await jobs.list_page(
            principal().account_id, kinds=readable, status=query.status, limit=query.limit + 1, after=after
        )
        page = rows[: query.limit]
        next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > query.limit else None
        return json_response({"jobs": [jobs.to_json(r) for r in page], "next_cursor": next_cursor})

    @app.get("/v1/jobs/<raw_id>")
    @requires(None, action="job.get", resource="job")
    async def get_job(raw_id: str) -> Response:  # scope: the kind's read scope
        row, kind = await owned(raw_id)
        if kind is not None:
            _require_read(kind)
        return json_response(await render(row))

    @app.post("/v1/jobs/<raw_id>/cancel")
    @requires(None, action="job.cancel", resource="job")
    async def cancel_job(raw_id: str) -> Response:  # scope: the kind's
        row, kind = await owned(raw_id)
        if kind is not None:
            principal().require(kind.scope)
        return json_response(await render(await jobs.cancel(principal().account_id, row["id"])))

    @app.post("/v1/jobs/<raw_id>/retry")
    @requires(None, action="job.retry", resource="job")
    async def retry_job(raw_id: str) -> Response:  # scope: the kind's
        row, kind = await owned(raw_id)
        if kind is None:
            raise errors.Conflict(f"job kind {row['kind']!r} is not offered here any more", code="unknown_kind")
        principal().require(kind.scope)
        caller = principal()
        return json_response(await jobs.retry(caller.account_id, row["id"], caller.user_id, caller.key_id))
