"""``/v1/webhooks``: the active account's webhooks and their delivery log.

A webhook is a URL, the event types it subscribes to and a signing secret
(given, or generated as ``whsec_...``; returned only when set). Deliveries
are queued in the store and sent by the delivery worker, never by the
request, so a slow receiver cannot hold up the API.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator
from quart import Response
from quart_trio import QuartTrio

from chaser.wire import errors
from scheduler.access import audit_resource, principal, requires
from scheduler.config import SchedulerConfig
from scheduler.events import EVENT_TYPES, PING
from scheduler.models import Query, StrictBody, path_id
from scheduler.pagination import decode_cursor, encode_cursor
from scheduler.store import Row, Store
from scheduler.timefmt import rfc3339
from scheduler.webhook_destinations import DestinationPolicy
from serving.quart_json import json_response, parse_body, parse_query

Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Secret = Annotated[str, StringConstraints(min_length=16, max_length=128, pattern=r"^[\x21-\x7e]+$")]
Events = Annotated[list[str], Field(min_length=1, max_length=len(EVENT_TYPES))]
Description = Annotated[str, StringConstraints(max_length=256)]


def check_events(events: list[str] | None) -> list[str] | None:
    if events is None:
        return None
    unknown = sorted(set(events) - EVENT_TYPES)
    if unknown:
        raise ValueError(f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(sorted(EVENT_TYPES))}")
    return sorted(set(events))


class CreateWebhookBody(StrictBody):
    url: Url
    events: Events
    secret: Secret | None = None
    description: Description | None = None
    active: bool = True

    validate_events = field_validator("events")(check_events)


class UpdateWebhookBody(StrictBody):
    url: Url | None = None
    events: Events | None = None
    secret: Secret | None = None
    description: Description | None = None
    active: bool | None = None

    validate_events = field_validator("events")(check_events)


class DeliveriesQuery(Query):
    status: Literal["pending", "succeeded", "failed"] | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = None


def webhook_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "url": row["url"],
        "events": row["events"],
        "description": row["description"],
        "active": row["active"],
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
    }


def delivery_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt_at": rfc3339(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "created_at": rfc3339(row["created_at"]),
        "delivered_at": rfc3339(row["delivered_at"]),
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "payload": json.loads(row["payload"]),
        "attempts_log": [
            {
                "number": a["number"],
                "started_at": rfc3339(a["started_at"]),
                "duration_ms": round(a["duration_ms"], 1),
                "status_code": a["status_code"],
                "error": a["error"],
            }
            for a in row["attempts_log"]
        ],
    }


def register_webhook_routes(app: QuartTrio, store: Store, config: SchedulerConfig) -> None:
    destinations = DestinationPolicy(config.webhook_block_private_networks, config.webhook_allowed_networks)

    def valid_url(url: str) -> str:
        try:
            destinations.check_url(url)
        except ValueError as exc:
            raise errors.InvalidInput(f"url: {exc}", code="invalid_url") from None
        return url

    async def find(raw_id: str) -> Row:
        row = await store.run(store.webhook, principal().account_id, path_id(raw_id, "webhook"))
        if row is None:
            raise errors.NotFound(f"webhook {raw_id} not found", code="webhook_not_found")
        return row

    @app.post("/v1/webhooks")
    @requires("webhooks.write", role="admin", action="webhook.create", resource="webhook")
    async def create_webhook() -> Response:
        body = await parse_body(CreateWebhookBody)
        now = time.time()
        row: Row = {
            "id": str(uuid.uuid4()),
            "account_id": principal().account_id,
            "url": valid_url(body.url),
            "events": body.events,
            "secret": body.secret or "whsec_" + secrets.token_urlsafe(32),
            "description": body.description,
            "active": body.active,
            "created_at": now,
            "updated_at": now,
        }
        await store.run(store.insert_webhook, row)
        audit_resource(row["id"])
        return json_response({**webhook_json(row), "secret": row["secret"]}, status=201)

    @app.get("/v1/webhooks")
    @requires("webhooks.read", action="webhook.list", resource="webhook")
    async def list_webhooks() -> Response:
        rows = await store.run(store.webhooks, principal().account_id)
        return json_response({"webhooks": [webhook_json(r) for r in rows]})

    @app.get("/v1/webhooks/<webhook_id>")
    @requires("webhooks.read", action="webhook.get", resource="webhook")
    async def get_webhook(webhook_id: str) -> Response:
        return json_response(webhook_json(await find(webhook_id)))

    @app.patch("/v1/webhooks/<webhook_id>")
    @requires("webhooks.write", role="admin", action="webhook.update", resource="webhook")
    async def update_webhook(webhook_id: str) -> Response:
        body = await parse_body(UpdateWebhookBody)
        row = await find(webhook_id)
        values = body.model_dump(exclude_unset=True)
        if "url" in values:
            values["url"] = valid_url(values["url"])
        for required in ("url", "events", "secret", "active"):
            if required in values and values[required] is None:
                raise errors.InvalidInput(f"{required}: cannot be null")
        if values:
            await store.run(store.update_webhook, row["account_id"], row["id"], values)
        result = webhook_json(await find(row["id"]))
        return json_response({**result, "secret": values["secret"]} if "secret" in values else result)

    @app.delete("/v1/webhooks/<webhook_id>")
    @requires("webhooks.write", role="admin", action="webhook.delete", resource="webhook")
    async def delete_webhook(webhook_id: str) -> Response:
        row = await find(webhook_id)
        await store.run(store.delete_webhook, row["account_id"], row["id"])
        return Response(b"", status=204)

    @app.post("/v1/webhooks/<webhook_id>/ping")
    @requires("webhooks.write", role="admin", action="webhook.ping", resource="webhook")
    async def ping_webhook(webhook_id: str) -> Response:
        row = await find(webhook_id)
        if not row["active"]:
            raise errors.Conflict("the webhook is not active", code="webhook_inactive")
        data = {"webhook_id": row["id"]}
        await store.run(store.enqueue_event, row["account_id"], PING, data, only_webhook=row["id"])
        return json_response({"queued": True, "event_type": PING}, status=202)

    @app.get("/v1/webhooks/<webhook_id>/deliveries")
    @requires("webhooks.read", action="webhook.deliveries", resource="webhook")
    async def list_deliveries(webhook_id: str) -> Response:
        query = parse_query(DeliveriesQuery)
        row = await find(webhook_id)
        after = decode_cursor(query.cursor, float, str) if query.cursor else None
        rows = await store.run(
            lambda: store.deliveries(
                row["account_id"], row["id"], status=query.status, limit=query.limit + 1, after=after
            )
        )
        page = rows[: query.limit]
        next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > query.limit else None
        return json_response({"deliveries": [delivery_json(r) for r in page], "next_cursor": next_cursor})
