"""Credentials: minting and hashing API keys, and resolving a request to a principal.

A key is ``sk_`` followed by 40 random base62 characters. Its first 12
characters after ``sk_`` are stored in clear as a lookup prefix; the whole
secret only as a SHA-256 hash (the secret has ~238 bits of entropy, so a
fast hash is the right tool: there is nothing to brute-force). The secret
is shown once, at creation.

A request carries a bearer token (an API key, or a JWT access token when an
issuer is configured) and optionally ``X-Chaser-Account``, which selects the
active account: an account ID, its exact name, or ``personal`` (the default).
A key is bound to the account it was made in; a JWT speaks for its user in
any account they belong to. An account the caller cannot see is a 404, so
its existence is not revealed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from dataclasses import dataclass

from chaser.wire import errors
from scheduler.jwt_tokens import JwtVerifier
from scheduler.store import Row, Store

KEY_PREFIX = "sk_"
_ALPHABET = string.ascii_letters + string.digits
_SECRET_LEN = 40
_LOOKUP_LEN = 12

# Every scope the API knows.
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


# Roles in an account, weakest first. Owners manage everything (billing and
# deletion included), admins manage members, keys and webhooks, members use
# resources. A user is the owner of their personal account.
ROLES = ("member", "admin", "owner")

# An endpoint that only an unrestricted credential may call: the scope
# list has no scope for managing accounts, members and service accounts.
FULL_ACCESS = "full-access"


def role_at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Principal:
    """Who is calling, and which account the call acts on (the active account)."""

    user_id: str | None
    account_id: str
    key_id: str | None
    scopes: frozenset[str] | None  # None = full access
    role: str = "owner"
    account_name: str = ""
    account_kind: str = "personal"
    service_account_id: str | None = None
    actor_name: str | None = None  # the user's email or the service account's name
    auth_method: str = "api_key"  # api_key | jwt

    @property
    def actor_type(self) -> str:
        return "service_account" if self.service_account_id is not None else "user"

    @property
    def actor_id(self) -> str | None:
        return self.service_account_id if self.service_account_id is not None else self.user_id

    def require(self, scope: str | None) -> None:
        """Refuse (403, naming the scope) unless the credential grants ``scope``."""
        if scope is None or self.scopes is None:
            return
        if scope == FULL_ACCESS:
            raise errors.Forbidden(
                "this endpoint needs a credential with full access (an API key without scopes)",
                code="missing_scope",
            )
        if scope not in self.scopes:
            raise errors.Forbidden(f"this API key lacks the scope {scope!r}", code="missing_scope")

    def require_role(self, role: str) -> None:
        if not role_at_least(self.role, role):
            raise errors.Forbidden(
                f"this needs the {role} role in account {self.account_name!r}; the caller is {self.role}",
                code="insufficient_role",
            )


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


class AuthFailure(errors.Unauthorized):
    """A 401 that remembers the key it was about, when there was one (for the audit trail)."""

    def __init__(self, message: str, key: Row | None = None) -> None:
        super().__init__(message)
        self.key = key


class Authenticator:
    # last_used_at is refreshed at most this often (seconds), not on every request.
    TOUCH_EVERY = 60.0

    def __init__(self, store: Store, jwt: JwtVerifier | None) -> None:
        self.store = store
        self.jwt = jwt

    async def authenticate(self, authorization: str | None, account: str | None) -> Principal:
        """Resolve the ``Authorization`` and ``X-Chaser-Account`` values, or raise 401/403/404."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthFailure("missing bearer token: send 'Authorization: Bearer sk_...'")
        if token.startswith(KEY_PREFIX):
            return await self._by_key(token, account)
        if token.count(".") == 2:
            return await self._by_jwt(token, account)
        raise AuthFailure("malformed API key")

    async def _by_key(self, token: str, selector: str | None) -> Principal:
        if not looks_like_key(token):
            raise AuthFailure("malformed API key")
        row = await self.store.run(self.store.key_for_auth, lookup_prefix(token))
        if row is None or not hmac.compare_digest(row["secret_hash"], hash_secret(token)):
            raise AuthFailure("invalid API key")
        if row["revoked_at"] is not None:
            raise AuthFailure("this API key has been revoked", key=row)
        if row["service_account_id"] is not None:
            role, name = row["service_account_role"], row["service_account_name"]
        elif row["member_role"] is not None:
            role, name = row["member_role"], row["user_email"]
        else:
            raise AuthFailure("this API key's user is no longer a member of its account", key=row)
        if selector is not None and not self._names_key_account(row, selector):
            await self._refuse_other_account(row, selector)
        if row["last_used_at"] is None or row["last_used_at"] < time.time() - self.TOUCH_EVERY:
            await self.store.run(self.store.touch_key_if_stale, row["id"], time.time(), self.TOUCH_EVERY)
        return Principal(
            user_id=row["user_id"],
            account_id=row["account_id"],
            key_id=row["id"],
            scopes=frozenset(row["scopes"]) if row["scopes"] is not None else None,
            role=role,
            account_name=row["account_name"],
            account_kind=row["account_kind"],
            service_account_id=row["service_account_id"],
            actor_name=name,
        )

    @staticmethod
    def _names_key_account(row: Row, selector: str) -> bool:
        if selector == "personal":
            return bool(row["account_kind"] == "personal")
        return selector in (row["account_id"], row["account_name"])

    async def _refuse_other_account(self, row: Row, selector: str) -> None:
        """A key cannot be redirected: 403 if its user can see that account, else 404."""
        visible = None
        if row["user_id"] is not None:
            visible = await self.store.run(self.store.account_for_user, row["user_id"], selector)
        if visible is None:
            raise _account_not_found(selector)
        raise errors.Forbidden(
            f"this API key is bound to account {row['account_name']!r} and cannot act on another account",
            code="key_bound_to_account",
        )

    async def _by_jwt(self, token: str, selector: str | None) -> Principal:
        if self.jwt is None:
            raise AuthFailure("JWT access tokens are not accepted here (no issuer configured)")
        claims = await self.jwt.verify(token)
        user = await self.store.run(self.store.user_for_identity, claims.issuer, claims.subject, claims.email)
        if user is None and claims.email is None:
            raise AuthFailure(
                "the access token's subject is unknown and carries no email to link it by"
                " (email_verified must be true and the issuer trusted for email: jwt_email_trusted)"
            )
        if user is None:
            raise AuthFailure(
                "the access token's subject is unknown and the user with its email already holds"
                " credentials (an API key or another login): it is not linked to a new one"
            )
        account = await self.store.run(self.store.account_for_user, user["id"], selector or "personal")
        if account is None:
            raise _account_not_found(selector or "personal")
        return Principal(
            user_id=user["id"],
            account_id=account["id"],
            key_id=None,
            scopes=claims.scopes,
            role=account["role"],
            account_name=account["name"],
            account_kind=account["kind"],
            actor_name=user["email"],
            auth_method="jwt",
        )


def _account_not_found(selector: str) -> errors.NotFound:
    return errors.NotFound(f"account {selector!r} not found", code="account_not_found")


async def authenticate(store: Store, authorization: str | None, account: str | None = None) -> Principal:
    """Resolve an API key (and an ``X-Chaser-Account`` value) to a principal."""
    return await Authenticator(store, jwt=None).authenticate(authorization, account)
