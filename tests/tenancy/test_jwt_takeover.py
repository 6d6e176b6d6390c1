"""Account takeover through a JWT's email claim: each attack is refused.

A new ``(iss, sub)`` is linked to an existing user by email only when the
token says ``email_verified: true`` (the JSON literal), the issuer is
trusted for email in the configuration, and that user holds no credentials
yet (no API key, no other identity): the user an invitation made.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from scheduler.jwt_tokens import JwksSource, JwtVerifier
from tests.tenancy.conftest import AUDIENCE, ISSUER, Issuer, Tenants


async def accounts(tenants: Tenants, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=tenants.system.api_url) as client:
        return await client.get("/v1/accounts", headers={"Authorization": f"Bearer {token}"})


async def test_email_not_literally_verified_links_nobody(tenants: Tenants) -> None:
    victim = "owner@test.invalid"  # the bootstrap user, who holds a key
    for verified in (None, "true", 1, False):
        token = tenants.issuer.token(victim, sub=f"mallory-{verified}", email_verified=verified)
        response = await accounts(tenants, token)
        assert response.status_code == 401, f"email_verified={verified!r}: {response.text}"
        assert "email" in response.json()["error"]["message"]


async def test_a_user_holding_a_key_is_never_linked(tenants: Tenants) -> None:
    token = tenants.issuer.token("owner@test.invalid", sub="mallory", email_verified=True)
    response = await accounts(tenants, token)
    assert response.status_code == 401, response.text
    assert "credentials" in response.json()["error"]["message"]


async def test_an_invited_user_is_linked_once(tenants: Tenants) -> None:
    admin = await tenants.user("admin@test.invalid")
    org = await tenants.org(admin)
    invited = await admin.post(f"/v1/accounts/{org['id']}/members", json={"email": "bob@test.invalid"})
    assert invited.status_code == 201, invited.text
    # Bob's first login (verified email, trusted issuer) finds his invitation.
    bob = await accounts(tenants, tenants.issuer.token("bob@test.invalid"))
    assert bob.status_code == 200, bob.text
    assert org["id"] in {a["id"] for a in bob.json()["accounts"]}
    # Another subject asserting Bob's verified email is not Bob.
    impostor = await accounts(tenants, tenants.issuer.token("bob@test.invalid", sub="someone-else"))
    assert impostor.status_code == 401, impostor.text
    # Bob himself keeps working.
    assert (await accounts(tenants, tenants.issuer.token("bob@test.invalid"))).status_code == 200


async def test_an_issuer_not_trusted_for_email_gives_no_email(tmp_path: Path) -> None:
    issuer = Issuer()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))

    def verifier(trusted: bool) -> JwtVerifier:
        return JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks=JwksSource(file=jwks), email_trusted=trusted)

    token = issuer.token("ada@test.invalid", email_verified=True)
    assert (await verifier(True).verify(token)).email == "ada@test.invalid"
    assert (await verifier(False).verify(token)).email is None
