"""``/v1/accounts``: organizations, their members and their service accounts.

Every user has a personal account (named by their email, owned by them,
with no other members). Organizations are created by a user, who becomes
their owner. In ``/v1/accounts/{account}/...`` the path names the account
acted on (an ID, the exact name, or ``personal``) in place of
``X-Chaser-Account``, with the same rules: an account the caller cannot see
is a 404, and a key works only in its own account.

Role rules: owners manage everything, including renaming and deleting the
organization and making or removing owners; admins manage members (not
owners) and service accounts; anyone may leave (an organization keeps at
least one owner). These endpoints need a credential without scope
restrictions, since no API scope covers them.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator
from quart import Response
from quart_trio import QuartTrio

from chaser.wire import errors
from scheduler.access import FULL_ACCESS, audit_resource, principal, requires
from scheduler.auth import Principal
from scheduler.keys_api import check_scopes, key_json, mint_key
from scheduler.models import StrictBody
from scheduler.store import Row, Store
from scheduler.timefmt import rfc3339
from serving.quart_json import json_response, parse_body

_ORG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}[A-Za-z0-9._-]|[A-Za-z0-9]")
_SERVICE_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

Email = Annotated[str, StringConstraints(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


def check_org_name(name: str) -> str:
    if not _ORG_NAME.fullmatch(name):
        raise ValueError(
            "1-64 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit, not ending in a space"
        )
    if name.lower() == "personal":
        raise ValueError("'personal' is reserved: it selects the caller's personal account")
    try:
        uuid.UUID(name)
    except ValueError:
        return name
    raise ValueError("a name cannot look like an account ID")


class NewKey(StrictBody):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)] = "owner"
    scopes: Annotated[list[str], Field(min_length=1)] | None = None

    validate_scopes = field_validator("scopes")(check_scopes)


class CreateAccountBody(StrictBody):
    name: str
    # A key for the new organization, made at once: with API keys alone
    # (no JWT login), it is the only way in, since keys cannot be redirected.
    key: NewKey | None = None

    validate_name = field_validator("name")(check_org_name)


class UpdateAccountBody(StrictBody):
    name: str

    validate_name = field_validator("name")(check_org_name)


class AddMemberBody(StrictBody):
    email: Email
    role: Literal["member", "admin", "owner"] = "member"


class UpdateMemberBody(StrictBody):
    role: Literal["member", "admin", "owner"]


class CreateServiceAccountBody(StrictBody):
    name: Annotated[str, StringConstraints(pattern=rf"^{_SERVICE_ACCOUNT_NAME.pattern}$")]
    role: Literal["member", "admin"] = "member"


def account_json(row: Row, role: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "role": role,
        "created_at": rfc3339(row["created_at"]),
    }


def _principal_account(caller: Principal) -> dict[str, Any]:
    return {
        "id": caller.account_id,
        "name": caller.account_name,
        "kind": caller.account_kind,
        "role": caller.role,
    }


def member_json(row: Row) -> dict[str, Any]:
    return {"user_id": row["id"], "email": row["email"], "role": row["role"], "joined_at": rfc3339(row["created_at"])}


def service_account_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "role": row["role"],
        "created_by": row["created_by"],
        "created_at": rfc3339(row["created_at"]),
    }


def _organization_only(caller: Principal) -> None:
    if caller.account_kind != "organization":
        raise errors.InvalidInput(
            "a personal account has no other members or service accounts; create an organization",
            code="personal_account",
        )


def register_account_routes(app: QuartTrio, store: Store) -> None:
    async def find_member(selector: str) -> Row:
        caller = principal()
        user = await store.run(store.user_by_selector, selector)
        member = await store.run(store.member, caller.account_id, user["id"]) if user else None
        if member is None:
            raise errors.NotFound(f"member {selector!r} not found", code="member_not_found")
        return member

    async def find_service_account(selector: str) -> Row:
        found = await store.run(store.service_account, principal().account_id, selector)
        if found is None:
            raise errors.NotFound(f"service account {selector!r} not found", code="service_account_not_found")
        return found

    # -- accounts ---------------------------------------------------------------

    @app.get("/v1/accounts")
    @requires(None, action="account.list", resource="account")
    async def list_accounts() -> Response:
        caller = principal()
        if caller.key_id is not None or caller.user_id is None:
            # A key sees only the account it is bound to.
            accounts = [_principal_account(caller)]
        else:
            rows = await store.run(store.accounts_of_user, caller.user_id)
            accounts = [account_json(r, r["role"]) for r in rows]
        return json_response({"accounts": accounts, "active": caller.account_id})

    @app.post("/v1/accounts")
    @requires(FULL_ACCESS, action="account.create", resource="account")
    async def create_account() -> Response:
        body = await parse_body(CreateAccountBody)
        caller = principal()
        if caller.user_id is None:
            raise errors.Forbidden("only a user can create an organization", code="user_required")
        row = await store.run(store.create_organization, body.name, caller.user_id)
        audit_resource(row["id"])
        result = account_json(row, "owner")
        new_key = body.key
        if new_key is not None:
            key, secret = await store.run(
                lambda: mint_key(
                    store,
                    account_id=row["id"],
                    name=new_key.name,
                    scopes=new_key.scopes,
                    user_id=caller.user_id,
                    service_account_id=None,
                    created_by=caller.user_id,
                )
            )
            full = await store.run(store.api_key, row["id"], key["id"])
            assert full is not None
            result["key"] = {**key_json(full), "secret": secret}
        return json_response(result, status=201)

    @app.get("/v1/accounts/<account>")
    @requires(None, action="account.get", resource="account")
    async def get_account(account: str) -> Response:
        return json_response(_principal_account(principal()))

    @app.patch("/v1/accounts/<account>")
    @requires(FULL_ACCESS, role="owner", action="account.update", resource="account")
    async def update_account(account: str) -> Response:
        body = await parse_body(UpdateAccountBody)
        caller = principal()
        if caller.account_kind != "organization":
            raise errors.InvalidInput("a personal account is named after its owner's email", code="personal_account")
        await store.run(store.rename_account, caller.account_id, body.name)
        return json_response({**_principal_account(caller), "name": body.name})

    @app.delete("/v1/accounts/<account>")
    @requires(FULL_ACCESS, role="owner", action="account.delete", resource="account")
    async def delete_account(account: str) -> Response:
        caller = principal()
        if caller.account_kind != "organization":
            raise errors.InvalidInput("a personal account cannot be deleted", code="personal_account")
        await store.run(store.delete_account, caller.account_id)
        return Response(b"", status=204)

    # -- members ----------------------------------------------------------------

    @app.get("/v1/accounts/<account>/members")
    @requires(FULL_ACCESS, action="member.list", resource="member")
    async def list_members(account: str) -> Response:
        rows = await store.run(store.members, principal().account_id)
        return json_response({"members": [member_json(r) for r in rows]})

    @app.post("/v1/accounts/<account>/members")
    @requires(FULL_ACCESS, role="admin", action="member.add", resource="member")
    async def add_member(account: str) -> Response:
        body = await parse_body(AddMemberBody)
        caller = principal()
        _organization_only(caller)
        if body.role == "owner":
            caller.require_role("owner")
        row = await store.run(store.add_member, caller.account_id, body.email, body.role)
        audit_resource(row["id"])
        return json_response(member_json(row), status=201)

    @app.patch("/v1/accounts/<account>/members/<user>")
    @requires(FULL_ACCESS, role="admin", action="member.update", resource="member")
    async def update_member(account: str, user: str) -> Response:
        body = await parse_body(UpdateMemberBody)
        caller = principal()
        member = await find_member(user)
        if "owner" in (member["role"], body.role):
            caller.require_role("owner")
        await store.run(store.set_member_role, caller.account_id, member["id"], body.role)
        return json_response(member_json({**member, "role": body.role}))

    @app.delete("/v1/accounts/<account>/members/<user>")
    @requires(FULL_ACCESS, action="member.remove", resource="member")
    async def remove_member(account: str, user: str) -> Response:
        caller = principal()
        _organization_only(caller)
        member = await find_member(user)
        if member["id"] != caller.user_id:  # anyone may leave; removing others is for admins
            caller.require_role("owner" if member["role"] == "owner" else "admin")
        await store.run(store.remove_member, caller.account_id, member["id"])
        return Response(b"", status=204)

    # -- service accounts -------------------------------------------------------

    @app.get("/v1/accounts/<account>/service-accounts")
    @requires(FULL_ACCESS, role="admin", action="service_account.list", resource="service_account")
    async def list_service_accounts(account: str) -> Response:
        rows = await store.run(store.service_accounts, principal().account_id)
        return json_response({"service_accounts": [service_account_json(r) for r in rows]})

    @app.post("/v1/accounts/<account>/service-accounts")
    @requires(FULL_ACCESS, role="admin", action="service_account.create", resource="service_account")
    async def create_service_account(account: str) -> Response:
        body = await parse_body(CreateServiceAccountBody)
        caller = principal()
        _organization_only(caller)
        row = await store.run(store.create_service_account, caller.account_id, body.name, body.role, caller.actor_id)
        audit_resource(row["id"])
        return json_response(service_account_json(row), status=201)

    @app.get("/v1/accounts/<account>/service-accounts/<service_account>")
    @requires(FULL_ACCESS, role="admin", action="service_account.get", resource="service_account")
    async def get_service_account(account: str, service_account: str) -> Response:
        return json_response(service_account_json(await find_service_account(service_account)))

    @app.delete("/v1/accounts/<account>/service-accounts/<service_account>")
    @requires(FULL_ACCESS, role="admin", action="service_account.delete", resource="service_account")
    async def delete_service_account(account: str, service_account: str) -> Response:
        found = await find_service_account(service_account)
        await store.run(store.delete_service_account, principal().account_id, found["id"])
        return Response(b"", status=204)
