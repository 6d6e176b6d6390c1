"""The keys session tokens are signed with: the schedulers' own, never the cluster token.

Every agent host holds the cluster token, so a session token keyed by it
could be minted for any tenant by anyone who reads one host's
configuration. Session tokens are instead signed with a key only the
schedulers have:

- ``session_token_keys`` in the scheduler's configuration: the first signs,
  every one listed is accepted. To rotate, put a new key first and keep the
  old one after it until the tokens it signed have expired
  (``session_token_max_ttl``), then remove it.
- Without it, a key the first scheduler generates and keeps in the store
  (``token_signing_keys``), which every replica reads: agents never see the
  database.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from scheduler import session_tokens
from scheduler.config import SchedulerConfig
from scheduler.store import Store
from scheduler.store.schema import token_signing_keys

_STORED_ID = "session-tokens"


@dataclass(frozen=True)
class TokenKeys:
    signing: bytes
    accepted: tuple[bytes, ...]  # the signing key first

    @classmethod
    def of(cls, secrets_: list[str]) -> TokenKeys:
        keys = tuple(session_tokens.signing_key(s) for s in secrets_)
        return cls(keys[0], keys)

    @classmethod
    def random(cls) -> TokenKeys:
        """A key nobody else has (an app that is never served, in tests)."""
        return cls.of([secrets.token_urlsafe(32)])


def stored_secret(store: Store) -> str:
    """The store's key, made on first use; replicas racing to make it all end with the same one."""
    query = sa.select(token_signing_keys.c.secret).where(token_signing_keys.c.id == _STORED_ID)
    with store.engine.connect() as conn:
        found = conn.execute(query).first()
    if found is not None:
        return str(found.secret)
    try:
        with store.engine.begin() as conn:
            conn.execute(
                token_signing_keys.insert().values(
                    id=_STORED_ID, secret=secrets.token_urlsafe(32), created_at=time.time()
                )
            )
    except sa.exc.IntegrityError:
        pass  # another replica made it first
    with store.engine.connect() as conn:
        return str(conn.execute(query).scalar_one())


async def load(config: SchedulerConfig, store: Store) -> TokenKeys:
    if config.session_token_keys:
        return TokenKeys.of([k.get_secret_value() for k in config.session_token_keys])
    return TokenKeys.of([await store.run(stored_secret, store)])
