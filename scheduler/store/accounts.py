"""Store queries for accounts, memberships, service accounts, API keys and JWT identities.

A mixin of ``Store``: plain blocking methods over ``self.engine``. Every
method that touches an account's resources takes that ``account_id``. The
invariants that need a transaction to hold under concurrent calls (an
organization keeps an owner, names stay unique) are enforced here and raise
the API's error types.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from chaser.wire import errors
from scheduler.core.session_states import ACTIVE
from scheduler.store.schema import (
    accounts,
    api_keys,
    identities,
    memberships,
    service_accounts,
    sessions,
    users,
)

Row = dict[str, Any]


def _looks_like_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class AccountQueries:
    engine: sa.Engine
    ensure_user: Callable[[str], tuple[Row, Row]]  # defined by Store

    # -- users and identities -----------------------------------------------

    def user_for_identity(self, issuer: str, subject: str, email: str | None) -> Row | None:
        """The user a JWT's (issuer, subject) maps to, or None.

        On first sight the subject is linked to the user with ``email`` (made
        if new), but only if that user holds no credentials yet: no API key
        and no other identity, i.e. a user an invitation made. A verified
        email must not let a second login take over an existing one.
        """
        query = sa.select(users).join(identities, identities.c.user_id == users.c.id)
        query = query.where(identities.c.issuer == issuer, identities.c.subject == subject)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is not None:
            return dict(row)
        if email is None:
            return None
        user, _personal = self.ensure_user(email)
        try:
            linked = self._link_identity(issuer, subject, user["id"])
        except sa.exc.IntegrityError:  # a concurrent first request linked it
            return self.user_for_identity(issuer, subject, None)
        return user if linked else None

    def _link_identity(self, issuer: str, subject: str, user_id: str) -> bool:
        """Link unless the user holds credentials; concurrent links to one user: one wins.

        The identity is inserted first and the user's row locked: a second
        link waits for the first to commit, then sees its identity and backs out.
        """
        with self.engine.begin() as conn:
            conn.execute(
                identities.insert().values(issuer=issuer, subject=subject, user_id=user_id, created_at=time.time())
            )
            conn.execute(sa.select(users.c.id).where(users.c.id == user_id).with_for_update())
            held = sa.select(sa.func.count()).select_from(identities).where(identities.c.user_id == user_id)
            keys = sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.user_id == user_id)
            if conn.execute(held).scalar_one() > 1 or conn.execute(keys).scalar_one() > 0:
                conn.rollback()
                return False
        return True

    def user_by_selector(self, selector: str) -> Row | None:
        """A user by id or email."""
        column = users.c.id if _looks_like_uuid(selector) else users.c.email
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(column == selector)).mappings().first()
        return dict(row) if row else None

    # -- accounts -------------------------------------------------------------

    def accounts_of_user(self, user_id: str) -> list[Row]:
        """Every account the user belongs to, with their role, personal first."""
        query = (
            sa.select(accounts, memberships.c.role)
            .join(memberships, memberships.c.account_id == accounts.c.id)
            .where(memberships.c.user_id == user_id)
            .order_by(accounts.c.kind.desc(), accounts.c.created_at, accounts.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def account_for_user(self, user_id: str, selector: str) -> Row | None:
        """The account ``selector`` names (``personal``, an ID, or the exact name) among the user's."""
        query = (
            sa.select(accounts, memberships.c.role)
            .join(memberships, memberships.c.account_id == accounts.c.id)
            .where(memberships.c.user_id == user_id)
        )
        if selector == "personal":
            query = query.where(accounts.c.kind == "personal")
        elif _looks_like_uuid(selector):
            query = query.where(sa.or_(accounts.c.id == selector, accounts.c.name == selector))
        else:
            query = query.where(accounts.c.name == selector)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query.order_by(accounts.c.kind.desc())).mappings()]
        # An ID beats a name; a personal account (its name is an email) beats an organization.
        rows.sort(key=lambda r: r["id"] != selector)
        return rows[0] if rows else None

    def create_organization(self, name: str, owner_id: str) -> Row:
        now = time.time()
        row: Row = {"id": str(uuid.uuid4()), "name": name, "kind": "organization", "created_at": now}
        try:
            with self.engine.begin() as conn:
                conn.execute(accounts.insert().values(**row))
                conn.execute(
                    memberships.insert().values(account_id=row["id"], user_id=owner_id, role="owner", created_at=now)
                )
        except sa.exc.IntegrityError:
            raise errors.Conflict(f"an organization named {name!r} already exists", code="name_taken") from None
        return row

    def rename_account(self, account_id: str, name: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(accounts.update().where(accounts.c.id == account_id).values(name=name))
        except sa.exc.IntegrityError:
            raise errors.Conflict(f"an organization named {name!r} already exists", code="name_taken") from None

    def delete_account(self, account_id: str) -> None:
        """Delete an organization and everything it owns; refused while sessions run."""
        with self.engine.begin() as conn:
            active = conn.execute(
                sa.select(sa.func.count())
                .select_from(sessions)
                .where(sessions.c.account_id == account_id, sessions.c.status.in_(ACTIVE))
            ).scalar_one()
            if active:
                raise errors.Conflict(
                    f"the account has {active} active session(s); terminate them first",
                    code="account_has_active_sessions",
                )
            conn.execute(accounts.delete().where(accounts.c.id == account_id))

    # -- members --------------------------------------------------------------

    def members(self, account_id: str) -> list[Row]:
        query = (
            sa.select(users.c.id, users.c.email, memberships.c.role, memberships.c.created_at)
            .join(memberships, memberships.c.user_id == users.c.id)
            .where(memberships.c.account_id == account_id)
            .order_by(memberships.c.created_at, users.c.email)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def member(self, account_id: str, user_id: str) -> Row | None:
        query = (
            sa.select(users.c.id, users.c.email, memberships.c.role, memberships.c.created_at)
            .join(memberships, memberships.c.user_id == users.c.id)
            .where(memberships.c.account_id == account_id, memberships.c.user_id == user_id)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def add_member(self, account_id: str, email: str, role: str) -> Row:
        """Add the user with this email (created if new, as a login-to-be) to the account."""
        user, _personal = self.ensure_user(email)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    memberships.insert().values(
                        account_id=account_id, user_id=user["id"], role=role, created_at=time.time()
                    )
                )
        except sa.exc.IntegrityError:
            raise errors.Conflict(f"{email} is already a member", code="already_member") from None
        member = self.member(account_id, user["id"])
        assert member is not None
        return member

    def set_member_role(self, account_id: str, user_id: str, role: str) -> None:
        with self.engine.begin() as conn:
            current = self._role(conn, account_id, user_id)
            if current == "owner" and role != "owner":
                self._keep_an_owner(conn, account_id)
            conn.execute(
                memberships.update()
                .where(memberships.c.account_id == account_id, memberships.c.user_id == user_id)
                .values(role=role)
            )

    def remove_member(self, account_id: str, user_id: str) -> None:
        """Remove a member; the keys they made act as them there, so they are revoked too."""
        with self.engine.begin() as conn:
            if self._role(conn, account_id, user_id) == "owner":
                self._keep_an_owner(conn, account_id)
            conn.execute(
                memberships.delete().where(memberships.c.account_id == account_id, memberships.c.user_id == user_id)
            )
            conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.account_id == account_id,
                    api_keys.c.user_id == user_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=time.time())
            )

    def _role(self, conn: sa.Connection, account_id: str, user_id: str) -> str:
        role = conn.execute(
            sa.select(memberships.c.role).where(
                memberships.c.account_id == account_id, memberships.c.user_id == user_id
            )
        ).scalar_one_or_none()
        if role is None:
            raise errors.NotFound("member not found", code="member_not_found")
        return str(role)

    def _keep_an_owner(self, conn: sa.Connection, account_id: str) -> None:
        owners = conn.execute(
            sa.select(sa.func.count())
            .select_from(memberships)
            .where(memberships.c.account_id == account_id, memberships.c.role == "owner")
        ).scalar_one()
        if owners <= 1:
            raise errors.Conflict("an organization must keep at least one owner", code="last_owner")

    # -- service accounts -----------------------------------------------------

    def create_service_account(self, account_id: str, name: str, role: str, created_by: str | None) -> Row:
        row: Row = {
            "id": str(uuid.uuid4()),
            "account_id": account_id,
            "name": name,
            "role": role,
            "created_at": time.time(),
            "created_by": created_by,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(service_accounts.insert().values(**row))
        except sa.exc.IntegrityError:
            raise errors.Conflict(f"a service account named {name!r} already exists", code="name_taken") from None
        return row

    def service_accounts(self, account_id: str) -> list[Row]:
        query = (
            sa.select(service_accounts)
            .where(service_accounts.c.account_id == account_id)
            .order_by(service_accounts.c.created_at, service_accounts.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def service_account(self, account_id: str, selector: str) -> Row | None:
        """A service account of this account, by id or (case-insensitive) name."""
        match = sa.func.lower(service_accounts.c.name) == selector.lower()
        if _looks_like_uuid(selector):
            match = sa.or_(service_accounts.c.id == selector, match)
        query = sa.select(service_accounts).where(service_accounts.c.account_id == account_id, match)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def delete_service_account(self, account_id: str, service_account_id: str) -> None:
        """Delete it and, by cascade, its keys."""
        with self.engine.begin() as conn:
            conn.execute(
                service_accounts.delete().where(
                    service_accounts.c.account_id == account_id, service_accounts.c.id == service_account_id
                )
            )

    # -- API keys -------------------------------------------------------------

    def key_for_auth(self, prefix: str) -> Row | None:
        """A key with what authentication needs: its account, and the role of whoever it acts as."""
        query = (
            sa.select(
                api_keys,
                accounts.c.name.label("account_name"),
                accounts.c.kind.label("account_kind"),
                memberships.c.role.label("member_role"),
                users.c.email.label("user_email"),
                service_accounts.c.name.label("service_account_name"),
                service_accounts.c.role.label("service_account_role"),
            )
            .join(accounts, accounts.c.id == api_keys.c.account_id)
            .outerjoin(
                memberships,
                sa.and_(memberships.c.account_id == api_keys.c.account_id, memberships.c.user_id == api_keys.c.user_id),
            )
            .outerjoin(users, users.c.id == api_keys.c.user_id)
            .outerjoin(service_accounts, service_accounts.c.id == api_keys.c.service_account_id)
            .where(api_keys.c.prefix == prefix)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def touch_key_if_stale(self, key_id: str, now: float, every: float) -> None:
        """Record use, at most once per ``every`` seconds (not a write per request)."""
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.id == key_id,
                    sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now - every),
                )
                .values(last_used_at=now)
            )

    def _keys_query(self, account_id: str) -> sa.Select[Any]:
        return (
            sa.select(
                api_keys,
                users.c.email.label("user_email"),
                service_accounts.c.name.label("service_account_name"),
            )
            .outerjoin(users, users.c.id == api_keys.c.user_id)
            .outerjoin(service_accounts, service_accounts.c.id == api_keys.c.service_account_id)
            .where(api_keys.c.account_id == account_id)
        )

    def api_keys(self, account_id: str) -> list[Row]:
        query = self._keys_query(account_id).order_by(api_keys.c.created_at.desc(), api_keys.c.id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def api_key(self, account_id: str, key_id: str) -> Row | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._keys_query(account_id).where(api_keys.c.id == key_id)).mappings().first()
        return dict(row) if row else None

    def revoke_api_key(self, account_id: str, key_id: str) -> None:
        """Idempotent: a revoked key keeps its first revocation time."""
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.account_id == account_id, api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
