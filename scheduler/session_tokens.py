"""Short-lived access tokens for one session's endpoints, signed, never stored.

A token lets a browser, a WebSocket client that cannot set headers, or a
program given no API key reach one session's endpoints, with a subset of
the minting key's scopes, until it expires (15 minutes by default). It is
``st_<payload>.<signature>``: the payload (session, account, scopes,
expiry, the session's token generation and who minted it) in base64url
JSON, signed with HMAC-SHA256 under a key only the schedulers hold
(``scheduler.token_keys``; never the cluster token, which every agent host
has), so every scheduler replica can check it and no token is stored. A token
stops working when its session ends (the router only routes to running
sessions), when the session's tokens are revoked (its generation moves on),
and when the key that minted it is revoked or its user leaves the account
(``scheduler.token_revocation`` checks both at each use).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from chaser.wire import errors

PREFIX = "st_"
DEFAULT_TTL = 900
MAX_TTL = 86_400  # the hard bound; the operator's `session_token_max_ttl` (1 h) is the usual one
# The scopes a session token can carry: what the session endpoints check.
ENDPOINT_SCOPES = frozenset({"sessions.read", "sessions.write", "exec.write", "files.read", "files.write"})
# What a token gets when its mint names no scopes: ports, tunnels and CDP, a
# shareable preview link; never a shell or the files (those only when asked).
DEFAULT_SCOPES = frozenset({"sessions.write"})


@dataclass(frozen=True)
class Claims:
    session_id: str
    account_id: str
    scopes: frozenset[str]
    expires_at: float
    generation: int = 0  # the session's token generation when minted
    key_id: str | None = None  # who minted it: a key, and/or the user it acts as
    user_id: str | None = None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise errors.Forbidden(f"this session token lacks the scope {scope!r}", code="missing_scope")


_IN_PATH = re.compile(r"/t/" + PREFIX + r"[^/]*")


def redact_path(path: str) -> str:
    """``path`` with any session token in it (``/t/st_...``) replaced: for logs and the audit trail."""
    return _IN_PATH.sub("/t/[token]", path)


def signing_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"chaser session access tokens v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(key: bytes, claims: Claims) -> str:
    payload = json.dumps(
        {
            "sid": claims.session_id,
            "acc": claims.account_id,
            "scp": sorted(claims.scopes),
            "exp": claims.expires_at,
            "gen": claims.generation,
            "kid": claims.key_id,
            "uid": claims.user_id,
        },
        separators=(",", ":"),
    ).encode()
    signature = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{PREFIX}{_b64(payload)}.{_b64(signature)}"


def looks_like_token(text: str) -> bool:
    return text.startswith(PREFIX)


def verify(keys: Sequence[bytes], token: str, now: float) -> Claims:
    """The token's claims, or 401 if it is malformed, forged (signed by none of ``keys``) or expired."""
    try:
        payload_text, signature_text = token[len(PREFIX) :].split(".")
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except ValueError:
        raise errors.Unauthorized("malformed session token") from None
    if not any(hmac.compare_digest(signature, hmac.new(key, payload, hashlib.sha256).digest()) for key in keys):
        raise errors.Unauthorized("invalid session token")
    try:
        data = json.loads(payload)
        claims = Claims(
            str(data["sid"]),
            str(data["acc"]),
            frozenset(str(s) for s in data["scp"]),
            float(data["exp"]),
            int(data.get("gen", 0)),
            _optional(data.get("kid")),
            _optional(data.get("uid")),
        )
    except (ValueError, KeyError, TypeError):  # signed by us, so only an older format gets here
        raise errors.Unauthorized("malformed session token") from None
    if claims.expires_at <= now:
        raise errors.Unauthorized("this session token has expired", code="token_expired")
    return claims


def _optional(value: object) -> str | None:
    return None if value is None else str(value)
