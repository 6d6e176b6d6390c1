"""Verify bearer JWT access tokens against a configured issuer, audience and JWKS.

The OAuth login flows (Google, GitHub) happen elsewhere; what reaches us is
their access token. We accept only the asymmetric algorithms configured
(RS256 and ES256 by default): ``none`` and the HMAC family are never
accepted, so a public key can never be used as an HMAC secret. Signature,
``exp``, ``iss`` and ``aud`` are checked by PyJWT.

The key set comes from a file or a URL. It is cached; a token naming a key
id we do not know makes us fetch it again (key rotation), at most once per
``refetch_interval``, so unknown ids cannot make us hammer the issuer.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import trio

from chaser.wire import errors

log = logging.getLogger(__name__)

# Asymmetric algorithms only: a JWKS is public, so an HMAC "key" from it
# would let anyone sign.
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})


@dataclass(frozen=True)
class Claims:
    issuer: str
    subject: str
    email: str | None  # only one the issuer verified and that we trust it for; may be linked
    scopes: frozenset[str] | None  # from a ``scope``/``scp`` claim, when there is one


class JwksSource:
    """The issuer's public keys, from a file or an HTTP(S) URL, cached."""

    def __init__(
        self,
        *,
        url: str | None = None,
        file: Path | None = None,
        max_age: float = 300.0,
        refetch_interval: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        if (url is None) == (file is None):
            raise ValueError("give exactly one of a JWKS url or file")
        self.url = url
        self.file = file
        self.max_age = max_age
        self.refetch_interval = refetch_interval
        self.timeout = timeout
        self._keys: dict[str | None, dict[str, Any]] = {}
        self._fetched_at = -float("inf")
        self._lock = trio.Lock()

    async def key(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK with this key id (with no id: the set's only key), fetching if needed."""
        now = time.monotonic()
        stale = now - self._fetched_at > self.max_age
        unknown = self._pick(kid) is None and now - self._fetched_at > self.refetch_interval
        if stale or unknown:
            async with self._lock:
                if time.monotonic() - self._fetched_at > min(self.refetch_interval, self.max_age):
                    await self._refresh()
        return self._pick(kid)

    def _pick(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        try:
            with trio.fail_after(self.timeout):
                document = await self._load()
            keys = document["keys"]
            if not isinstance(keys, list):
                raise TypeError("'keys' is not a list")
            self._keys = {k.get("kid"): k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"}
        except (OSError, ValueError, KeyError, TypeError, httpx.HTTPError, trio.TooSlowError) as exc:
            # Keep the keys we had: an issuer's hiccup must not log everyone out.
            log.warning("could not load the JWKS from %s: %s", self.url or self.file, exc)
        finally:
            self._fetched_at = time.monotonic()

    async def _load(self) -> Any:
        if self.file is not None:
            return json.loads(await trio.Path(self.file).read_text())
        assert self.url is not None
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            response = await client.get(self.url, headers={"Accept": "application/json"})
            response.raise_for_status()
            return response.json()


class JwtVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: JwksSource,
        algorithms: frozenset[str] = frozenset({"RS256", "ES256"}),
        leeway: float = 30.0,
        email_claim: str = "email",
        email_trusted: bool = False,
        known_scopes: frozenset[str] = frozenset(),
    ) -> None:
        if not algorithms <= ASYMMETRIC:
            raise ValueError(f"only asymmetric algorithms are accepted: {sorted(ASYMMETRIC)}")
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.algorithms = algorithms
        self.leeway = leeway
        self.email_claim = email_claim
        self.email_trusted = email_trusted
        self.known_scopes = known_scopes

    async def verify(self, token: str) -> Claims:
        """The token's claims, or ``Unauthorized`` saying what is wrong with it."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise errors.Unauthorized("malformed access token") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise errors.Unauthorized(f"access tokens signed with {alg!r} are not accepted")
        kid = header.get("kid")
        jwk = await self.jwks.key(kid if isinstance(kid, str) else None)
        if jwk is None:
            raise errors.Unauthorized("the access token's signing key is unknown")
        if jwk.get("alg", alg) != alg:
            raise errors.Unauthorized("the access token's algorithm does not match its key")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise errors.Unauthorized("the access token has expired") from None
        except jwt.InvalidAudienceError:
            raise errors.Unauthorized("the access token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise errors.Unauthorized("the access token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise errors.Unauthorized("the access token's signature is invalid") from None
        except (jwt.PyJWTError, jwt.PyJWKError):
            raise errors.Unauthorized("invalid access token") from None
        return self._claims(claims)

    def _claims(self, claims: dict[str, Any]) -> Claims:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise errors.Unauthorized("the access token has no subject")
        email = claims.get(self.email_claim)
        # Only the JSON literal ``true``: a missing claim, "true" or 1 is an
        # address nobody checked, and an email is what links accounts.
        verified = claims.get("email_verified") is True
        if not (self.email_trusted and verified and isinstance(email, str) and email):
            email = None
        return Claims(issuer=self.issuer, subject=subject, email=email, scopes=self._scopes(claims))

    def _scopes(self, claims: dict[str, Any]) -> frozenset[str] | None:
        """OAuth's ``scope`` (space-separated) or ``scp`` (list) narrows the token, if present."""
        raw = claims.get("scope", claims.get("scp"))
        if raw is None:
            return None
        names = raw.split() if isinstance(raw, str) else [s for s in raw if isinstance(s, str)]
        return frozenset(names) & self.known_scopes
