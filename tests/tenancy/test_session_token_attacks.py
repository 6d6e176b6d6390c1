"""Session tokens are as weak as they can usefully be, and die with what made them.

The attacks: a shared preview link that is a shell (a token minted without
``scopes`` carried every endpoint scope of its key), a token that lives a
day, that cannot be taken back, that outlives its key and its member, and a
page on another site opening a terminal with the victim's credentials (no
``Origin`` check on WebSocket upgrades).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from trio_websocket import ConnectionRejected, open_websocket_url

from scheduler import session_tokens
from scheduler.session_tokens import Claims
from tests.endpoints import new_session
from tests.tenancy.conftest import Tenants

HOSTNAME = "files/etc/hostname"


async def mint(client: httpx.AsyncClient, session_id: str, **body: Any) -> httpx.Response:
    return await client.post(f"/v1/sessions/{session_id}/tokens", json=body)


async def status_with(api_url: str, session_id: str, token: str) -> tuple[int, str | None]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as anonymous:
        response = await anonymous.get(f"/s/{session_id}/{HOSTNAME}", headers={"Authorization": f"Bearer {token}"})
    code = response.json()["error"]["code"] if response.status_code >= 400 else None
    return response.status_code, code


def default_account(token: str) -> str:
    """The account a token names (its payload is readable; only its signature is secret)."""
    payload = token.removeprefix("st_").split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["acc"])


async def test_session_tokens_are_narrow_short_and_revocable(sqlite_tenants: Tenants) -> None:
    system = sqlite_tenants.system
    session_id = (await new_session(system))["id"]
    api_url = system.api_url

    # A token minted without scopes is for ports, tunnels and CDP: no shell, no files.
    default = await mint(system.client, session_id)
    assert default.status_code == 201 and default.json()["scopes"] == ["sessions.write"], default.text
    preview = default.json()["token"]
    assert await status_with(api_url, session_id, preview) == (403, "missing_scope")
    ws = system.api_url.replace("http://", "ws://") + f"/s/{session_id}/pty?chaser_token={preview}"
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(ws):
            pass
    assert rejected.value.status_code == 403

    # Whoever holds the cluster token (every agent host) cannot mint a session token:
    # they are signed with a key only the schedulers hold.
    forged = Claims(session_id, default_account(default.json()["token"]), frozenset({"files.read"}), 2e9)
    by_host = session_tokens.mint(session_tokens.signing_key(system.token), forged)
    assert (await status_with(api_url, session_id, by_host))[0] == 401

    # At most an hour by default.
    too_long = await mint(system.client, session_id, ttl_seconds=3601, scopes=["files.read"])
    assert too_long.status_code == 422 and "3600" in too_long.json()["error"]["message"], too_long.text

    # DELETE /v1/sessions/{id}/tokens ends every token of the session, and only those.
    reader = (await mint(system.client, session_id, scopes=["files.read"])).json()["token"]
    other_id = (await new_session(system))["id"]
    elsewhere = (await mint(system.client, other_id, scopes=["files.read"])).json()["token"]
    assert await status_with(api_url, session_id, reader) == (200, None)
    revoked = await system.client.delete(f"/v1/sessions/{session_id}/tokens")
    assert revoked.status_code == 200, revoked.text
    assert await status_with(api_url, session_id, reader) == (401, "token_revoked")
    assert await status_with(api_url, other_id, elsewhere) == (200, None)
    fresh = (await mint(system.client, session_id, scopes=["files.read"])).json()["token"]
    assert await status_with(api_url, session_id, fresh) == (200, None)

    # A token dies with the key that minted it.
    made = (await system.client.post("/v1/keys", json={"name": "minter"})).json()
    minter = await sqlite_tenants.client(made["secret"])
    by_key = (await mint(minter, session_id, scopes=["files.read"])).json()["token"]
    assert await status_with(api_url, session_id, by_key) == (200, None)
    assert (await system.client.delete(f"/v1/keys/{made['id']}")).status_code < 300
    assert await status_with(api_url, session_id, by_key) == (401, "token_revoked")

    # ... and with its member's membership.
    owner = await sqlite_tenants.user("owner-st@test.invalid")
    org = await sqlite_tenants.org(owner)
    added = await owner.post(f"/v1/accounts/{org['id']}/members", json={"email": "leaver@test.invalid"})
    assert added.status_code == 201, added.text
    leaver = await sqlite_tenants.user("leaver@test.invalid", account=org["id"])
    org_session = await leaver.post("/v1/sessions", json={"ephemeral": True})
    assert org_session.status_code == 201, org_session.text
    org_session_id = org_session.json()["id"]
    by_member = (await mint(leaver, org_session_id, scopes=["files.read"])).json()["token"]
    assert await status_with(api_url, org_session_id, by_member) == (200, None)
    removed = await owner.delete(f"/v1/accounts/{org['id']}/members/leaver@test.invalid")
    assert removed.status_code < 300, removed.text
    assert await status_with(api_url, org_session_id, by_member) == (401, "token_revoked")
    terminated = await owner.delete(f"/v1/sessions/{org_session_id}", headers={"X-Chaser-Account": org["id"]})
    assert terminated.status_code == 200, terminated.text

    # A page on another site cannot open a terminal with the caller's credentials.
    shell = system.api_url.replace("http://", "ws://") + f"/s/{session_id}/exec"
    key = ("Authorization", f"Bearer {system.api_key}")
    with pytest.raises(ConnectionRejected) as cross_site:
        async with open_websocket_url(shell, extra_headers=[key, ("Origin", "https://evil.example")]):
            pass
    assert cross_site.value.status_code == 403
    for origin in ([("Origin", system.api_url)], []):  # the API's own pages, and clients that send none
        async with open_websocket_url(shell, extra_headers=[key, *origin]):
            pass
    for ended in (session_id, other_id):
        assert (await system.client.delete(f"/v1/sessions/{ended}")).status_code == 200
