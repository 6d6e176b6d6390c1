"""A session as the API and its events show it, built in one place.

Events (``session.created``, ``session.terminated``) carry the summary; the
API's answers add to it what only a live scheduler knows (the endpoints'
public addresses) and the session's settings. Both start from here, so a
field is added once. This module imports nothing of the store or the
events, so either can use it.
"""

from __future__ import annotations

from typing import Any

from scheduler.timefmt import rfc3339


def session_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A session's identity and status (its row, in the API's field names)."""
    return {
        "id": row["id"],
        "session_type": row["session_type"],
        "status": row["status"],
        "status_reason": row["status_reason"],
        "ephemeral": row["ephemeral"],
        "workspace": row["workspace_id"],
        "image": row["image"],
        "image_digest": row.get("image_digest"),
        "created_at": rfc3339(row["created_at"]),
        "started_at": rfc3339(row["started_at"]),
        "terminated_at": rfc3339(row["terminated_at"]),
    }
