"""API keys over /v1/keys, driven with curl: shown once, stored hashed, scoped, revoked at once."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
import trio

from scheduler.auth import hash_secret
from scheduler.store.schema import api_keys
from tests.tenancy.conftest import Tenants


async def curl(tenants: Tenants, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    command = ["curl", "-sS", "-X", method, "-w", "\n%{http_code}", f"{tenants.system.api_url}{path}",
               "-H", f"Authorization: Bearer {key}"]  # fmt: skip
    if body is not None:
        command += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    done = await trio.run_process(command, capture_stdout=True)
    text, _, status = done.stdout.decode().rpartition("\n")
    return int(status), json.loads(text) if text else None


async def test_create_list_use_revoke(tenants: Tenants) -> None:
    owner = tenants.system.api_key
    status, created = await curl(tenants, owner, "POST", "/v1/keys", {"name": "ci", "scopes": ["sessions.read"]})
    assert status == 201, created
    secret = created["secret"]
    assert secret.startswith("sk_") and created["prefix"] == secret[:15]
    assert created["scopes"] == ["sessions.read"] and created["acts_as"]["type"] == "user"

    status, listed = await curl(tenants, owner, "GET", "/v1/keys")
    assert status == 200
    assert secret not in json.dumps(listed)
    assert {k["name"] for k in listed["keys"]} == {"bootstrap", "ci"}
    # Stored as a hash only.
    store = tenants.system.store()
    try:

        def stored() -> list[dict[str, Any]]:
            with store.engine.connect() as conn:
                return [dict(r) for r in conn.execute(sa.select(api_keys)).mappings()]

        rows = await trio.to_thread.run_sync(stored)
    finally:
        store.close()
    assert secret not in json.dumps(rows, default=str)
    assert hash_secret(secret) in {r["secret_hash"] for r in rows}

    assert (await curl(tenants, secret, "GET", "/v1/sessions"))[0] == 200
    status, refused = await curl(tenants, secret, "POST", "/v1/sessions", {"ephemeral": True})
    assert status == 403 and refused["error"]["message"] == "this API key lacks the scope 'sessions.write'"
    status, used = await curl(tenants, owner, "GET", f"/v1/keys/{created['id']}")
    assert used["last_used_at"] is not None

    status, revoked = await curl(tenants, owner, "DELETE", f"/v1/keys/{created['id']}")
    assert status == 200 and revoked["revoked_at"] is not None
    status, after = await curl(tenants, secret, "GET", "/v1/sessions")
    assert status == 401 and "revoked" in after["error"]["message"]
    # Revoking again changes nothing.
    assert (await curl(tenants, owner, "DELETE", f"/v1/keys/{created['id']}"))[1]["revoked_at"] == revoked["revoked_at"]


async def test_no_escalation_and_bad_input(tenants: Tenants) -> None:
    owner = tenants.system.api_key
    _, keys_only = await curl(tenants, owner, "POST", "/v1/keys", {"name": "k", "scopes": ["keys.write"]})
    limited = keys_only["secret"]
    status, refused = await curl(tenants, limited, "POST", "/v1/keys", {"name": "root"})
    assert status == 403 and refused["error"]["code"] == "scope_escalation"
    status, refused = await curl(tenants, limited, "POST", "/v1/keys", {"name": "x", "scopes": ["audit.read"]})
    assert status == 403 and "audit.read" in refused["error"]["message"]
    status, same = await curl(tenants, limited, "POST", "/v1/keys", {"name": "same", "scopes": ["keys.write"]})
    assert same["scopes"] == ["keys.write"]
    assert status == 201, same
    for body in (
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["sessions.admin"]},
        {"name": "", "scopes": None},
        {"scopes": ["sessions.read"]},
        {"name": "x", "extra": 1},
        {"name": "x", "scopes": "sessions.read"},
    ):
        status, error = await curl(tenants, owner, "POST", "/v1/keys", body)
        assert status == 422, (body, error)
    status, error = await curl(tenants, owner, "POST", "/v1/keys", {"name": "x", "service_account": "ci"})
    assert status == 422 and error["error"]["code"] == "personal_account"
    for path in ("/v1/keys/nope", "/v1/keys/00000000-0000-0000-0000-000000000000"):
        assert (await curl(tenants, owner, "GET", path))[0] == 404
        assert (await curl(tenants, owner, "DELETE", path))[0] == 404
