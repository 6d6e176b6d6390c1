"""Account events that webhooks deliver, and how to publish one.

An event is queued in the durable outbox (``webhook_deliveries``): one row
per webhook of the account that subscribes to its type. The delivery worker
(``scheduler.webhook_delivery``) sends them; nothing here waits on a
receiver.

Two ways to publish, for any feature (sessions, jobs, workspaces):

- ``await publish(store, account_id, "job.succeeded", {"job": {...}})``
  after the state change is committed; or
- ``store.enqueue_event_in(conn, account_id, type, data)`` inside the store
  transaction that makes the change, then ``store.notify_outbox()`` after
  commit — the event is then queued if and only if the change happened
  (sessions do this).

A new event type is added to ``EVENT_TYPES`` so webhooks can subscribe to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar

from scheduler.timefmt import rfc3339

P = ParamSpec("P")
T = TypeVar("T")


class Outbox(Protocol):
    """What publishing needs of the store, named here: the store imports events, not the other way."""

    def enqueue_event(self, account_id: str, event_type: str, data: dict[str, Any]) -> int: ...

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...


EVENT_TYPES = frozenset(
    {
        "session.created",
        "session.terminated",
        "job.succeeded",
        "job.failed",
        "job.canceled",
        "workspace.created",
        "workspace.deleted",
        "snapshot.created",
    }
)

# Sent to one webhook on request (POST /v1/webhooks/{id}/ping), whatever it subscribes to.
PING = "webhook.ping"


def envelope(event_id: str, event_type: str, account_id: str, created_at: float, data: dict[str, Any]) -> str:
    """The JSON body a receiver gets (and the bytes that are signed)."""
    return json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "created_at": rfc3339(created_at),
            "account_id": account_id,
            "data": data,
        },
        separators=(",", ":"),
    )


async def publish(store: Outbox, account_id: str, event_type: str, data: dict[str, Any]) -> int:
    """Queue an event for the account's subscribed webhooks; returns how many deliveries."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}: add it to scheduler.events.EVENT_TYPES")
    return await store.run(store.enqueue_event, account_id, event_type, data)
