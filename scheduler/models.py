"""Bases for request models: bodies are strict JSON, query strings are lax text; unknown keys are refused."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict

from chaser import errors


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


def path_id(raw: str, what: str) -> str:
    """A UUID from a path, normalised; anything else is an id nobody has: 404."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise errors.NotFound(f"{what} {raw} not found", code=f"{what.replace(' ', '_')}_not_found") from None
