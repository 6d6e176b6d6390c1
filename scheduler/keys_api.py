"""``/v1/keys``: create, list, inspect and revoke the active account's API keys.

A key is bound to the account active when it is made and acts as the user
who made it (with their role there) or as a service account of that
account. Its secret is returned once, at creation; lists never show it.
A scoped caller cannot mint a key with more access than its own.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator
from quart import Response
from quart_trio import QuartTrio

from chaser.wire import errors
from scheduler.access import audit_resource, principal, requires
from scheduler.auth import SCOPES, Principal, hash_secret, lookup_prefix, new_secret
from scheduler.models import StrictBody, path_id
from scheduler.store import Row, Store
from scheduler.timefmt import rfc3339
from serving.quart_json import json_response, parse_body

Name = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]


def check_scopes(scopes: list[str] | None) -> list[str] | None:
    """Known scopes, deduplicated and sorted; ``None`` (full access) stays ``None``."""
    if scopes is None:
        return None
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(SCOPES))}")
    return sorted(set(scopes))


class CreateKeyBody(StrictBody):
    name: Name
    # Omitted or null: full access. An empty list is refused as ambiguous.
    scopes: Annotated[list[str], Field(min_length=1, max_length=len(SCOPES))] | None = None
    service_account: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None

    validate_scopes = field_validator("scopes")(check_scopes)


def key_json(row: Row) -> dict[str, Any]:
    service_account = row["service_account_id"]
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": "sk_" + row["prefix"],
        "scopes": row["scopes"],
        "account_id": row["account_id"],
        "acts_as": {
            "type": "service_account" if service_account else "user",
            "id": service_account or row["user_id"],
            "name": row.get("service_account_name") if service_account else row.get("user_email"),
        },
        "created_by": row["created_by"],
        "created_at": rfc3339(row["created_at"]),
        "last_used_at": rfc3339(row["last_used_at"]),
        "revoked_at": rfc3339(row["revoked_at"]),
    }


def mint_key(
    store: Store,
    *,
    account_id: str,
    name: str,
    scopes: list[str] | None,
    user_id: str | None,
    service_account_id: str | None,
    created_by: str | None,
) -> tuple[Row, str]:
    """Store a new key (hashed) and return its row and its one-time secret."""
    secret = new_secret()
    row = store.insert_api_key(
        account_id=account_id,
        user_id=user_id,
        name=name,
        prefix=lookup_prefix(secret),
        secret_hash=hash_secret(secret),
        scopes=scopes,
        service_account_id=service_account_id,
        created_by=created_by,
    )
    return row, secret


def refuse_escalation(caller: Principal, scopes: list[str] | None) -> None:
    if caller.scopes is None:
        return
    wanted = SCOPES if scopes is None else frozenset(scopes)
    extra = sorted(wanted - caller.scopes)
    if extra:
        raise errors.Forbidden(
            f"a key cannot grant more than the caller's own scopes (not granted: {', '.join(extra)})",
            code="scope_escalation",
        )


def register_key_routes(app: QuartTrio, store: Store) -> None:
    async def find(key_id: str) -> Row:
        row = await store.run(store.api_key, principal().account_id, path_id(key_id, "key"))
        if row is None:
            raise errors.NotFound(f"key {key_id} not found", code="key_not_found")
        return row

    @app.post("/v1/keys")
    @requires("keys.write", role="admin", action="key.create", resource="key")
    async def create_key() -> Response:
        body = await parse_body(CreateKeyBody)
        caller = principal()
        refuse_escalation(caller, body.scopes)
        user_id, service_account_id = caller.user_id, caller.service_account_id
        if body.service_account is not None:
            if caller.account_kind == "personal":
                raise errors.InvalidInput("personal accounts have no service accounts", code="personal_account")
            found = await store.run(store.service_account, caller.account_id, body.service_account)
            if found is None:
                raise errors.NotFound(
                    f"service account {body.service_account!r} not found", code="service_account_not_found"
                )
            user_id, service_account_id = None, found["id"]
        row, secret = await store.run(
            lambda: mint_key(
                store,
                account_id=caller.account_id,
                name=body.name,
                scopes=body.scopes,
                user_id=user_id,
                service_account_id=service_account_id,
                created_by=caller.actor_id,
            )
        )
        audit_resource(row["id"])
        full = await store.run(store.api_key, caller.account_id, row["id"])
        assert full is not None
        return json_response({**key_json(full), "secret": secret}, status=201)

    @app.get("/v1/keys")
    @requires("keys.read", role="admin", action="key.list", resource="key")
    async def list_keys() -> Response:
        rows = await store.run(store.api_keys, principal().account_id)
        return json_response({"keys": [key_json(r) for r in rows]})

    @app.get("/v1/keys/<key_id>")
    @requires("keys.read", role="admin", action="key.get", resource="key")
    async def get_key(key_id: str) -> Response:
        return json_response(key_json(await find(key_id)))

    @app.delete("/v1/keys/<key_id>")
    @requires("keys.write", role="admin", action="key.revoke", resource="key")
    async def revoke_key(key_id: str) -> Response:
        row = await find(key_id)
        await store.run(store.revoke_api_key, principal().account_id, row["id"])
        return json_response(key_json(await find(row["id"])))
