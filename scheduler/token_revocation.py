"""What kills a session token before it expires: a revocation, its key, its member.

Tokens are signed, not stored, so revoking them needs something they are
checked against at each use: the session's ``token_generation`` (``DELETE
/v1/sessions/{id}/tokens`` moves it on, so every token minted before is
dead), and the minting credential (a revoked key, or a user no longer a
member of the account, takes its tokens with it, as it takes its jobs).
The router reads the session's row anyway; the creator check is one
indexed query, like the key lookup an API-key request makes.
"""

from __future__ import annotations

import sqlalchemy as sa

from chaser.wire import errors
from scheduler.session_tokens import Claims
from scheduler.store import Row, Store
from scheduler.store.schema import api_keys, memberships, sessions


def bump_generation(store: Store, account_id: str, session_id: str) -> int | None:
    """Revoke the session's tokens; its new generation, or None if it is not the account's."""
    where = (sessions.c.id == session_id) & (sessions.c.account_id == account_id)
    with store.engine.begin() as conn:
        conn.execute(sessions.update().where(where).values(token_generation=sessions.c.token_generation + 1))
        found = conn.execute(sa.select(sessions.c.token_generation).where(where)).first()
    return None if found is None else int(found.token_generation)


def creator_may_act(store: Store, account_id: str, key_id: str | None, user_id: str | None) -> bool:
    """Whether a token's minter may still act in the account: key not revoked, user still a member."""
    with store.engine.connect() as conn:
        if key_id is not None:
            found = conn.execute(sa.select(api_keys.c.revoked_at).where(api_keys.c.id == key_id)).first()
            if found is None or found.revoked_at is not None:
                return False
        if user_id is not None:
            member = sa.select(memberships.c.user_id).where(
                memberships.c.account_id == account_id, memberships.c.user_id == user_id
            )
            return conn.execute(member).first() is not None
    return True


async def check_alive(store: Store, claims: Claims, session: Row) -> None:
    """401 ``token_revoked`` unless the token is of the session's current generation and its minter may act."""
    if claims.generation != session["token_generation"]:
        raise errors.Unauthorized("this session's tokens have been revoked", code="token_revoked")
    if not await store.run(creator_may_act, store, claims.account_id, claims.key_id, claims.user_id):
        raise errors.Unauthorized(
            "the key or member that minted this session token may no longer act", code="token_revoked"
        )
