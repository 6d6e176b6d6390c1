"""Fixtures for the multi-tenant layer: a JWT issuer the tests own, and a system that trusts it.

The issuer's keys (RS256 and ES256) are generated per test; its JWKS is
served over HTTP on 127.0.0.1 and the scheduler is configured with that
URL, exactly as it would be with a real identity provider's.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import System, start_system, stop_system
from tests.tenancy.local_http import serve

ISSUER = "https://login.test.invalid/"
AUDIENCE = "chaser-api"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Issuer:
    """A stand-in identity provider: keys, a JWKS document, and signed access tokens."""

    rsa_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    ec_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    extra_keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    url: str = ""

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        return {"keys": [{**rsa_jwk, "kid": "rsa-1", "use": "sig"}, {**ec_jwk, "kid": "ec-1"}, *self.extra_keys]}

    def claims(self, email: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": f"user-{email}",
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + 600,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, email: str, alg: str = "RS256", kid: str | None = None, **overrides: Any) -> str:
        key: Any = self.rsa_key if alg == "RS256" else self.ec_key
        kid = kid or ("rsa-1" if alg == "RS256" else "ec-1")
        return jwt.encode(self.claims(email, **overrides), key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    it = Issuer()

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if path != "/.well-known/jwks.json":
            return 404, b"{}"
        it.fetches += 1
        return 200, json.dumps(it.jwks()).encode()

    with serve(handle) as url:
        it.url = url
        yield it


def tenant_overrides(issuer: Issuer) -> dict[str, Any]:
    return {
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwt_jwks_url": f"{issuer.url}/.well-known/jwks.json",
        "jwt_jwks_refetch_interval": 0.5,
        "jwt_email_trusted": True,
        # Receivers in tests listen on 127.0.0.1; retries come quickly.
        "webhook_block_private_networks": False,
        "webhook_retry_base": 0.2,
        "webhook_retry_max": 1.0,
        "webhook_poll_interval": 0.2,
        "webhook_timeout": 3.0,
        "registry_credentials_key": secrets.token_hex(32),
    }


@dataclass
class Tenants:
    """A running system that trusts ``issuer``, and clients for any credential."""

    system: System
    issuer: Issuer
    _stack: AsyncExitStack

    async def client(self, credential: str, account: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {credential}"}
        if account is not None:
            headers["X-Chaser-Account"] = account
        client = httpx.AsyncClient(base_url=self.system.api_url, headers=headers, timeout=60)
        self._stack.push_async_callback(client.aclose)
        return client

    async def user(self, email: str, account: str | None = None) -> httpx.AsyncClient:
        """A client for a user logged in through the issuer (a JWT)."""
        return await self.client(self.issuer.token(email), account)

    async def org(self, owner: httpx.AsyncClient, name: str | None = None) -> dict[str, Any]:
        created = await owner.post("/v1/accounts", json={"name": name or f"Org {uuid.uuid4().hex[:8]}"})
        assert created.status_code == 201, created.text
        return created.json()  # type: ignore[no-any-return]

    async def key(self, creator: httpx.AsyncClient, **body: Any) -> str:
        created = await creator.post("/v1/keys", json={"name": "test", **body})
        assert created.status_code == 201, created.text
        return created.json()["secret"]  # type: ignore[no-any-return]


async def open_tenants(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, database_url: str, issuer: Issuer, **overrides: Any
) -> tuple[Tenants, AsyncExitStack]:
    stack = AsyncExitStack()
    system = await start_system(
        nursery,
        tmp_path,
        images_dir,
        database_url,
        scheduler_overrides={**tenant_overrides(issuer), **overrides},
    )
    stack.push_async_callback(stop_system, system)
    return Tenants(system, issuer, stack), stack


@pytest.fixture
async def tenants(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, database_url: str, issuer: Issuer
) -> AsyncIterator[Tenants]:
    running, stack = await open_tenants(nursery, tmp_path, images_dir, database_url, issuer)
    async with stack:
        yield running


@pytest.fixture
async def sqlite_tenants(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, issuer: Issuer
) -> AsyncIterator[Tenants]:
    """Where the database makes no difference (the scope table, the CLI)."""
    running, stack = await open_tenants(nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", issuer)
    async with stack:
        yield running
