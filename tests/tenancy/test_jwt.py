"""Bearer JWT access tokens: verified against the issuer, audience and JWKS we configured.

The tests are the identity provider: they generate RS256 and ES256 keys,
serve the JWKS over HTTP on 127.0.0.1, and sign tokens, good and bad.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
import sqlalchemy as sa
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scheduler.store.schema import audit_events
from tests.conftest import System, start_system, stop_system, wait_until
from tests.tenancy.conftest import AUDIENCE, ISSUER, Issuer, Tenants, b64url


async def whoami(tenants: Tenants, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=tenants.system.api_url) as client:
        return await client.get("/v1/accounts", headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_valid_token_maps_to_a_user_and_their_personal_account(tenants: Tenants, alg: str) -> None:
    token = tenants.issuer.token("ada@test.invalid", alg=alg)
    response = await whoami(tenants, token)
    assert response.status_code == 200, response.text
    [personal] = response.json()["accounts"]
    assert personal["kind"] == "personal" and personal["name"] == "ada@test.invalid" and personal["role"] == "owner"
    # The same subject keeps mapping to the same user, even if its email claim changes.
    again = await whoami(tenants, tenants.issuer.token("renamed@test.invalid", alg=alg, sub="user-ada@test.invalid"))
    assert again.json()["accounts"][0]["id"] == personal["id"]


def unsigned(claims: dict[str, object], header: dict[str, object]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def hs256_with_public_key(issuer: Issuer, claims: dict[str, object]) -> str:
    """The classic key-confusion forgery: HMAC keyed with the issuer's public key."""
    public_pem = issuer.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{b64url(json.dumps({'alg': 'HS256', 'kid': 'rsa-1'}).encode())}.{b64url(json.dumps(claims).encode())}"
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def forged(issuer: Issuer, email: str) -> str:
    """Signed by a key that is not the issuer's, under the issuer's key id."""
    stranger = rsa.generate_private_key(65537, 2048)
    return jwt.encode(issuer.claims(email), stranger, algorithm="RS256", headers={"kid": "rsa-1"})


async def test_bad_tokens_are_refused(tenants: Tenants) -> None:
    issuer = tenants.issuer
    email = "mallory@test.invalid"
    now = int(time.time())
    cases = {
        "expired": issuer.token(email, exp=now - 3600, iat=now - 7200),
        "wrong audience": issuer.token(email, aud="someone-else"),
        "wrong issuer": issuer.token(email, iss="https://evil.test.invalid/"),
        "wrong signature": forged(issuer, email),
        "alg none": unsigned(issuer.claims(email), {"alg": "none", "kid": "rsa-1"}),
        "alg none, no kid": unsigned(issuer.claims(email), {"alg": "none"}),
        "HS256 keyed with the public key": hs256_with_public_key(issuer, issuer.claims(email)),
        "unknown key id": issuer.token(email, kid="nobody"),
        "no expiry": issuer.token(email, exp=None),
        "ES256 header on the RSA key": issuer.token(email, alg="ES256", kid="rsa-1"),
        "tampered payload": (
            lambda t: (
                t.split(".")[0]
                + "."
                + b64url(json.dumps(issuer.claims("root@test.invalid")).encode())
                + "."
                + t.split(".")[2]
            )
        )(issuer.token(email)),
        "garbage": "not.a.jwt",
    }
    for name, token in cases.items():
        response = await whoami(tenants, token)
        assert response.status_code == 401, f"{name}: {response.text}"
        assert response.json()["error"]["code"] == "unauthorized", name
    # None of them created a user or an account.
    store = tenants.system.store()
    try:
        assert await trio.to_thread.run_sync(store.user_by_selector, email) is None
    finally:
        store.close()
    # The refusals are in the audit trail (no account known: an anonymous actor).
    store = tenants.system.store()
    try:

        def count() -> int:
            with store.engine.connect() as conn:
                query = (
                    sa.select(sa.func.count()).select_from(audit_events).where(audit_events.c.action == "auth.failed")
                )
                return int(conn.execute(query).scalar_one())

        # (Anonymous failures are counted per address and window: the first is written at once.)
        assert await trio.to_thread.run_sync(count) >= 1
    finally:
        store.close()


async def test_messages_say_what_is_wrong(tenants: Tenants) -> None:
    issuer = tenants.issuer
    now = int(time.time())
    expired = await whoami(tenants, issuer.token("a@test.invalid", exp=now - 3600, iat=now - 7200))
    assert "expired" in expired.json()["error"]["message"]
    audience = await whoami(tenants, issuer.token("a@test.invalid", aud="other"))
    assert "audience" in audience.json()["error"]["message"]
    none = await whoami(tenants, unsigned(issuer.claims("a@test.invalid"), {"alg": "none"}))
    assert "'none'" in none.json()["error"]["message"]


async def test_rotated_key_is_fetched_once_needed(tenants: Tenants) -> None:
    issuer = tenants.issuer
    assert (await whoami(tenants, issuer.token("r@test.invalid"))).status_code == 200
    fetched = issuer.fetches
    new_key = rsa.generate_private_key(65537, 2048)
    issuer.extra_keys.append({**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(new_key.public_key())), "kid": "rsa-2"})
    token = jwt.encode(issuer.claims("r@test.invalid"), new_key, algorithm="RS256", headers={"kid": "rsa-2"})

    async def accepted() -> bool:
        return (await whoami(tenants, token)).status_code == 200

    await wait_until(accepted)  # once the refetch interval (0.5 s here) has passed
    assert issuer.fetches > fetched
    # Unknown key ids do not make us fetch on every request: at most once per interval.
    fetched, started = issuer.fetches, time.monotonic()
    for _ in range(10):
        assert (await whoami(tenants, issuer.token("r@test.invalid", kid="nope"))).status_code == 401
    assert issuer.fetches - fetched <= 1 + (time.monotonic() - started) / 0.5


async def test_token_scopes_narrow_access(tenants: Tenants) -> None:
    token = tenants.issuer.token("s@test.invalid", scope="sessions.read openid")
    async with httpx.AsyncClient(base_url=tenants.system.api_url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert (await c.get("/v1/sessions")).status_code == 200
        refused = await c.get("/v1/webhooks")
        assert refused.status_code == 403
        assert "webhooks.read" in refused.json()["error"]["message"]


async def test_jwks_from_a_file(nursery: trio.Nursery, tmp_path: Path, images_dir: Path) -> None:
    issuer = Issuer()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    system = await start_system(
        nursery,
        tmp_path,
        images_dir,
        f"sqlite:///{tmp_path / 'db'}",
        scheduler_overrides={
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "jwt_jwks_file": str(jwks),
            "jwt_email_trusted": True,
        },
    )
    try:
        async with httpx.AsyncClient(base_url=system.api_url) as client:
            for alg in ("RS256", "ES256"):
                ok = await client.get(
                    "/v1/sessions", headers={"Authorization": f"Bearer {issuer.token('f@test.invalid', alg=alg)}"}
                )
                assert ok.status_code == 200, ok.text
            bad = await client.get(
                "/v1/sessions", headers={"Authorization": f"Bearer {forged(issuer, 'f@test.invalid')}"}
            )
            assert bad.status_code == 401
    finally:
        await stop_system(system)


async def test_without_issuer_jwts_are_refused(system: System) -> None:
    issuer = Issuer()
    async with httpx.AsyncClient(base_url=system.api_url) as client:
        response = await client.get(
            "/v1/sessions", headers={"Authorization": f"Bearer {issuer.token('x@test.invalid')}"}
        )
    assert response.status_code == 401
    assert "not accepted" in response.json()["error"]["message"]
