"""Routes about a session's lifetime and its endpoints' access tokens.

PATCH /v1/sessions/{id}          {"timeout_ms": N, "idle_timeout_ms": M}
    A new ``timeout_ms`` sets the deadline to now + N (extends, or
    shortens); the deadline is stored, so it sticks.
POST  /v1/sessions/{id}/tokens   {"ttl_seconds": 900, "scopes": [...]}
    A short-lived access token for this session's endpoints, carrying
    at most the scopes of the key that mints it; without ``scopes`` only
    ``sessions.write`` (ports, tunnels, CDP: what a shared link is for),
    for at most ``session_token_max_ttl`` seconds.
DELETE /v1/sessions/{id}/tokens
    Every token of the session minted so far stops working.
"""

from __future__ import annotations

import time
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from quart import Response
from quart_trio import QuartTrio

from chaser.wire import errors
from scheduler import session_tokens, token_revocation
from scheduler.access import principal, requires
from scheduler.models import session_id_of
from scheduler.session_tokens import Claims
from scheduler.sessions import SessionService
from scheduler.timefmt import rfc3339
from serving.quart_json import json_response, parse_body

TimeoutMs = Annotated[int, Field(gt=0)]


class LifetimeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    timeout_ms: TimeoutMs | None = None
    idle_timeout_ms: TimeoutMs | None = None

    @model_validator(mode="after")
    def _something(self) -> LifetimeBody:
        if self.timeout_ms is None and self.idle_timeout_ms is None:
            raise ValueError("give timeout_ms, idle_timeout_ms, or both")
        return self


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    ttl_seconds: Annotated[int, Field(gt=0, le=session_tokens.MAX_TTL)] | None = None
    scopes: list[str] | None = Field(default=None, max_length=16)


def register_session_routes(app: QuartTrio, service: SessionService, token_key: bytes) -> None:
    @app.patch("/v1/sessions/<raw_id>")
    @requires("sessions.write", action="session.update")
    async def set_lifetime(raw_id: str) -> Response:
        body = await parse_body(LifetimeBody)
        row = await service.set_lifetime(
            principal().account_id,
            session_id_of(raw_id),
            timeout_ms=body.timeout_ms,
            idle_timeout_ms=body.idle_timeout_ms,
        )
        return json_response(service.to_json(row))

    @app.post("/v1/sessions/<raw_id>/tokens")
    @requires("sessions.write", action="session.token")
    async def mint_token(raw_id: str) -> Response:
        body = await parse_body(TokenBody)
        caller = principal()
        row = await service.get(caller.account_id, session_id_of(raw_id))
        if row["status"] == "terminated":
            raise errors.Conflict(f"session {row['id']} has ended", code="session_not_running")
        longest = service.config.session_token_max_ttl
        ttl = body.ttl_seconds if body.ttl_seconds is not None else min(session_tokens.DEFAULT_TTL, longest)
        if ttl > longest:
            raise errors.InvalidInput(f"ttl_seconds may be at most {longest}", code="ttl_too_long")
        allowed = session_tokens.ENDPOINT_SCOPES
        if caller.scopes is not None:
            allowed = allowed & caller.scopes
        scopes = session_tokens.DEFAULT_SCOPES if body.scopes is None else frozenset(body.scopes)
        if not scopes <= allowed:
            extra = ", ".join(sorted(scopes - allowed))
            raise errors.Forbidden(f"cannot grant {extra}: not an endpoint scope of this key", code="missing_scope")
        claims = Claims(
            row["id"],
            row["account_id"],
            scopes,
            time.time() + ttl,
            generation=row["token_generation"],
            key_id=caller.key_id,
            user_id=caller.user_id,
        )
        token = session_tokens.mint(token_key, claims)
        expires = rfc3339(claims.expires_at)
        return json_response(
            {"token": token, "session_id": row["id"], "scopes": sorted(scopes), "expires_at": expires}, status=201
        )

    @app.delete("/v1/sessions/<raw_id>/tokens")
    @requires("sessions.write", action="session.tokens_revoke", resource="session")
    async def revoke_tokens(raw_id: str) -> Response:
        account_id = principal().account_id
        row = await service.get(account_id, session_id_of(raw_id))
        generation = await service.store.run(token_revocation.bump_generation, service.store, account_id, row["id"])
        if generation is None:
            raise errors.NotFound(f"session {row['id']} not found", code="session_not_found")
        return json_response({"session_id": row["id"], "tokens_revoked": True})
