"""API keys: minting, hashing, and resolving a bearer token to a principal.

A key is ``sk_`` followed by 40 random base62 characters. Its first 12
characters after ``sk_`` are stored in clear as a lookup prefix; the whole
secret only as a SHA-256 hash (the secret has ~238 bits of entropy, so a
fast hash is the right tool: there is nothing to brute-force). The secret
is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

from chaser import errors
from scheduler.store import Store

KEY_PREFIX = "sk_"
_ALPHABET = string.ascii_letters + string.digits
_SECRET_LEN = 40
_LOOKUP_LEN = 12

# Every scope the API knows (see the seeds' "Authentication" section).
SCOPES = frozenset(
    {
        "sessions.read",
        "sessions.write",
        "workspaces.read",
        "workspaces.write",
        "exec.write",
        "files.read",
        "files.write",
        "keys.read",
        "keys.write",
        "billing.read",
        "billing.write",
        "audit.read",
        "webhooks.read",
        "webhooks.write",
    }
)


@dataclass(frozen=True)
class Principal:
    """Who is calling, and which account the call acts on."""

    user_id: str | None
    account_id: str
    key_id: str
    scopes: frozenset[str] | None  # None = full access

    def require(self, scope: str) -> None:
        if self.scopes is not None and scope not in self.scopes:
            raise errors.Forbidden(f"this API key lacks the scope {scope!r}", code="missing_scope")


def new_secret() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LEN))


def lookup_prefix(secret: str) -> str:
    return secret[len(KEY_PREFIX) : len(KEY_PREFIX) + _LOOKUP_LEN]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(secret: str) -> bool:
    body = secret[len(KEY_PREFIX) :]
    return secret.startswith(KEY_PREFIX) and len(body) == _SECRET_LEN and all(c in _ALPHABET for c in body)


def ensure_key(store: Store, email: str, secret: str, name: str) -> None:
    """Make ``secret`` a valid full-access key of ``email``'s personal account."""
    if not looks_like_key(secret):
        raise ValueError("bootstrap API key must be sk_ followed by 40 letters or digits")
    existing = store.api_key_by_prefix(lookup_prefix(secret))
    if existing is not None:
        if not hmac.compare_digest(existing["secret_hash"], hash_secret(secret)):
            raise ValueError("bootstrap API key collides with another key's prefix")
        return
    user, account = store.ensure_user(email)
    store.insert_api_key(
        account_id=account["id"],
        user_id=user["id"],
        name=name,
        prefix=lookup_prefix(secret),
        secret_hash=hash_secret(secret),
        scopes=None,
    )


async def authenticate(store: Store, authorization: str | None) -> Principal:
    """Resolve an ``Authorization`` header to a principal, or raise 401."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.Unauthorized("missing bearer token: send 'Authorization: Bearer sk_...'")
    if not looks_like_key(token):
        raise errors.Unauthorized("malformed API key")
    row = await store.run(store.api_key_by_prefix, lookup_prefix(token))
    if row is None or not hmac.compare_digest(row["secret_hash"], hash_secret(token)):
        raise errors.Unauthorized("invalid API key")
    if row["revoked_at"] is not None:
        raise errors.Unauthorized("this API key has been revoked")
    scopes = frozenset(row["scopes"]) if row["scopes"] is not None else None
    return Principal(user_id=row["user_id"], account_id=row["account_id"], key_id=row["id"], scopes=scopes)
