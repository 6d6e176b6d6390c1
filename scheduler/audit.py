"""The audit trail: one append-only event per mutating call and per refused call.

Recorded after the response is built (so the result and status are known)
for every ``POST``/``PUT``/``PATCH``/``DELETE`` under ``/v1`` and for every
authentication or authorization failure anywhere (401, 403, an account the
caller cannot select), except that anonymous failures are counted per
source address and window (``failure_windows``), not written one each.
Each event says when, in which account, who (user, service account and the
key used, or anonymous), what (the route's declared action and the
resource), from where (source IP), how it ended, and how many times.
``GET /v1/audit`` reads them back with filters and cursor pagination.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Response, g, request
from quart_trio import QuartTrio

from chaser.wire import errors
from scheduler.access import principal, requirement_of, requires
from scheduler.auth import AuthFailure, Principal
from scheduler.failure_windows import FailureWindows, Summary
from scheduler.pagination import decode_cursor, encode_cursor
from scheduler.session_tokens import redact_path
from scheduler.store import Row, Store
from scheduler.store.audit import AuditFilter
from scheduler.timefmt import rfc3339
from serving.quart_json import json_response, parse_query

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str | None = Field(default=None, max_length=64)
    actor: str | None = Field(default=None, max_length=64)
    resource: str | None = Field(default=None, max_length=128)
    resource_type: str | None = Field(default=None, max_length=32)
    result: Literal["success", "failure", "denied"] | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(default=100, ge=1, le=500)
    cursor: str | None = None


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise errors.InvalidInput("since/until need a time zone (e.g. 2024-05-01T12:00:00Z)")
    return value.timestamp()


def event_json(row: Row) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "time": rfc3339(row["time"]),
        "account_id": row["account_id"],
        "actor": {
            "type": row["actor_type"],
            "id": row["actor_id"],
            "name": row["actor_name"],
            "key_id": row["key_id"],
            "auth_method": row["auth_method"],
        },
        "action": row["action"],
        "resource": {"type": row["resource_type"], "id": row["resource_id"]},
        "request": {"method": row["method"], "path": row["path"]},
        "source_ip": row["source_ip"],
        "result": row["result"],
        "status": row["status"],
        "error_code": row["error_code"],
        "occurrences": row["occurrences"] or 1,
    }


def actor_fields(caller: Principal | None, failure: AuthFailure | None) -> dict[str, Any]:
    """Who an event is about: the caller, the known key of a refused call, or anonymous."""
    if caller is not None:
        return {
            "account_id": caller.account_id,
            "actor_type": caller.actor_type,
            "actor_id": caller.actor_id,
            "actor_name": caller.actor_name,
            "key_id": caller.key_id,
            "auth_method": caller.auth_method,
        }
    key = failure.key if failure is not None else None
    if key is not None:  # a key we know, refused (revoked, or its user left)
        service_account = key["service_account_id"]
        return {
            "account_id": key["account_id"],
            "actor_type": "service_account" if service_account else "user",
            "actor_id": service_account or key["user_id"],
            "actor_name": key["service_account_name"] if service_account else key["user_email"],
            "key_id": key["id"],
            "auth_method": "api_key",
        }
    return {
        "account_id": None,
        "actor_type": "anonymous",
        "actor_id": None,
        "actor_name": None,
        "key_id": None,
        "auth_method": None,
    }


async def _error_code(response: Response) -> str | None:
    if response.status_code < 400 or response.content_type != "application/json":
        return None
    try:
        code = json.loads(await response.get_data(as_text=True))["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(code)[:64]


async def append_event(store: Store, row: Row) -> None:
    try:
        await store.run(store.append_audit, row)
    except Exception:
        # The call itself is done; losing its trail is logged loudly, not turned into a 500.
        log.exception("could not write an audit event", extra={"account_id": row["account_id"]})


def _summary_row(summary: Summary) -> Row:
    """The row for a window's counted anonymous failures."""
    return {
        "time": summary.last_at,
        **actor_fields(None, None),
        "action": "auth.failed",
        "method": summary.method,
        "path": summary.path,
        "source_ip": summary.address,
        "result": "denied",
        "status": 401,
        "error_code": "unauthorized",
        "occurrences": summary.occurrences,
    }


def install_audit(app: QuartTrio, store: Store, failure_window: float) -> None:
    anonymous = FailureWindows(failure_window)

    @app.after_request
    async def _record(response: Response) -> Response:
        for summary in anonymous.closed(time.time()):
            await append_event(store, _summary_row(summary))
        status = response.status_code
        denied = status in (401, 403) or bool(g.get("account_denied"))
        mutating = request.path.startswith("/v1/") and request.method in MUTATING
        if not (denied or mutating):
            return response
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        requirement = requirement_of(view)
        if status == 401:
            action = "auth.failed"
        elif requirement is not None:
            action = requirement.action
        else:
            action = f"{request.method} {request.url_rule.rule if request.url_rule else request.path}"
        view_args = request.view_args or {}
        resource_id = g.get("audit_resource_id") or (list(view_args.values())[-1] if view_args else None)
        row = {
            "time": time.time(),
            **actor_fields(g.get("principal"), g.get("auth_failure")),
            "action": action[:64],
            "resource_type": requirement.resource if requirement is not None else None,
            "resource_id": str(resource_id)[:128] if resource_id is not None else None,
            "method": request.method[:8],
            "path": redact_path(request.path)[:512],
            "source_ip": (request.remote_addr or "")[:64] or None,
            "result": "denied" if denied else ("success" if status < 400 else "failure"),
            "status": status,
            "error_code": await _error_code(response),
        }
        anonymous_401 = row["actor_type"] == "anonymous" and status == 401
        if anonymous_401 and not anonymous.note(row["source_ip"], row["time"], row["method"], row["path"]):
            return response  # counted, written with its window
        await append_event(store, row)
        return response

    @app.get("/v1/audit")
    @requires("audit.read", role="admin", action="audit.list", resource="audit")
    async def list_audit() -> Response:
        query = parse_query(AuditQuery)
        where = AuditFilter(
            action=query.action,
            actor=query.actor,
            resource=query.resource,
            resource_type=query.resource_type,
            result=query.result,
            since=_timestamp(query.since),
            until=_timestamp(query.until),
        )
        before = decode_cursor(query.cursor, int)[0] if query.cursor else None
        rows = await store.run(store.audit_events, principal().account_id, where, limit=query.limit + 1, before=before)
        page = rows[: query.limit]
        next_cursor = encode_cursor(page[-1]["id"]) if len(rows) > query.limit else None
        return json_response({"events": [event_json(r) for r in page], "next_cursor": next_cursor})
