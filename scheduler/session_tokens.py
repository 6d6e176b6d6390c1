"""Short-lived access tokens for one session's endpoints, signed, never stored.

A token lets a browser, a WebSocket client that cannot set headers, or a
program given no API key reach one session's endpoints, with a subset of
the minting key's scopes, until it expires (15 minutes by default). It is
``st_<payload>.<signature>``: the payload (session, account, scopes,
expiry) in base64url JSON, signed with HMAC-SHA256 under a key derived from
the cluster token, so every scheduler replica can check it and nothing
needs storing. Tokens also stop working when their session ends, since the
router only routes to running sessions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from chaser.wire import errors

PREFIX = "st_"
DEFAULT_TTL = 900
MAX_TTL = 86_400
# The scopes a session token can carry: what the session endpoints check.
ENDPOINT_SCOPES = frozenset({"sessions.read", "sessions.write", "exec.write", "files.read", "files.write"})


@dataclass(frozen=True)
class Claims:
    session_id: str
    account_id: str
    scopes: frozenset[str]
    expires_at: float

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise errors.Forbidden(f"this session token lacks the scope {scope!r}", code="missing_scope")


_IN_PATH = re.compile(r"/t/" + PREFIX + r"[^/]*")


def redact_path(path: str) -> str:
    """``path`` with any session token in it (``/t/st_...``) replaced: for logs and the audit trail."""
    return _IN_PATH.sub("/t/[token]", path)


def signing_key(cluster_token: str) -> bytes:
    return hmac.new(cluster_token.encode(), b"chaser session access tokens v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(key: bytes, claims: Claims) -> str:
    payload = json.dumps(
        {"sid": claims.session_id, "acc": claims.account_id, "scp": sorted(claims.scopes), "exp": claims.expires_at},
        separators=(",", ":"),
    ).encode()
    signature = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{PREFIX}{_b64(payload)}.{_b64(signature)}"


def looks_like_token(text: str) -> bool:
    return text.startswith(PREFIX)


def verify(key: bytes, token: str, now: float) -> Claims:
    """The token's claims, or 401 if it is malformed, forged or expired."""
    try:
        payload_text, signature_text = token[len(PREFIX) :].split(".")
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except ValueError:
        raise errors.Unauthorized("malformed session token") from None
    if not hmac.compare_digest(signature, hmac.new(key, payload, hashlib.sha256).digest()):
        raise errors.Unauthorized("invalid session token")
    data = json.loads(payload)
    claims = Claims(str(data["sid"]), str(data["acc"]), frozenset(data["scp"]), float(data["exp"]))
    if claims.expires_at <= now:
        raise errors.Unauthorized("this session token has expired", code="token_expired")
    return claims
