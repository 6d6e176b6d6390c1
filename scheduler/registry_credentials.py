"""``/v1/registry-credentials``: an account's logins to private registries, and their use for pulls.

An account gives one login per registry (``ghcr.io``, ``127.0.0.1:5000``).
The password (or token) is sealed at rest (``credential_seal``), never
returned, logged or audited; the list shows the registry, the user name,
the id and when it was given. At a session create the scheduler opens the
login for the registry of the session's image, for that account only, and
sends it to the chosen host with the create; the host writes it to a 0600
auth file for that one skopeo call and keeps nothing. Which host may serve
a cached private image to which account is the host's decision
(``agent/registry/store.py``): it asks the registry with that account's
login before handing out an image pulled with another's.

No ``images.*`` scope exists in the seeds, so these routes use
``workspaces.write`` / ``workspaces.read``, like the other things an
account keeps for its sandboxes.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import StringConstraints
from quart import Response
from quart_trio import QuartTrio

from chaser.wire import errors
from chaser.wire.image_reference import DOCKER_HUB, BadReference, parse_reference
from scheduler.access import audit_resource, principal, requires
from scheduler.config import SchedulerConfig
from scheduler.credential_seal import SealBroken, Sealer
from scheduler.models import StrictBody, path_id
from scheduler.store import Row, Store
from scheduler.store.schema import registry_credentials as table
from scheduler.timefmt import rfc3339
from serving.quart_json import json_response, parse_body

log = logging.getLogger(__name__)

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Registry = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Username = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f:]+$")]
Password = Annotated[str, StringConstraints(min_length=1, max_length=8192, pattern=_PRINTABLE)]


class CreateCredentialBody(StrictBody):
    registry: Registry
    username: Username
    password: Password


@dataclass(frozen=True)
class RegistryLogin:
    """An opened login, on its way to a host for one pull."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"RegistryLogin(username={self.username!r}, password=***)"

    def to_agent(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def registry_host(text: str) -> str:
    """``text`` as a registry host (``ghcr.io``, ``127.0.0.1:5000``), as image references name it."""
    lowered = text.strip().lower()
    try:
        domain = parse_reference(f"{lowered}/x/y").domain
    except BadReference:
        domain = ""
    hub_alias = lowered in ("index.docker.io", "registry-1.docker.io")
    if not domain or (domain != lowered and not (hub_alias and domain == DOCKER_HUB)):
        raise errors.InvalidInput(
            f"registry: {text!r} is not a registry host (a name with a dot or a port, "
            "or localhost: ghcr.io, registry.example.com:5000)",
            code="invalid_registry",
        )
    return domain


def _bound_to(account_id: str, registry: str, username: str) -> str:
    return f"{account_id}\n{registry}\n{username}"


def _public(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "registry": row["registry"],
        "username": row["username"],
        "created_at": rfc3339(row["created_at"]),
    }


class RegistryLogins:
    """The accounts' registry logins: kept sealed, opened only for that account's pull."""

    def __init__(self, store: Store, config: SchedulerConfig) -> None:
        self.store = store
        key = config.registry_credentials_key
        previous = [old.get_secret_value() for old in config.registry_credentials_previous_keys]
        self._sealer = Sealer(key.get_secret_value(), previous) if key is not None else None

    def _sealer_or_refuse(self) -> Sealer:
        if self._sealer is None:
            raise errors.Unavailable(
                "registry credentials are off: the operator has set no registry_credentials_key",
                code="registry_credentials_disabled",
            )
        return self._sealer

    # -- blocking queries (called through store.run) ------------------------

    def _insert(self, row: Row) -> bool:
        try:
            with self.store.engine.begin() as conn:
                conn.execute(table.insert().values(**row))
        except sa.exc.IntegrityError:
            return False
        return True

    def _list(self, account_id: str) -> list[Row]:
        query = sa.select(table).where(table.c.account_id == account_id).order_by(table.c.registry)
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def _for_registry(self, account_id: str, registry: str) -> Row | None:
        query = sa.select(table).where(table.c.account_id == account_id, table.c.registry == registry)
        with self.store.engine.connect() as conn:
            found = conn.execute(query).mappings().first()
        return dict(found) if found else None

    def _reseal(self, credential_id: str, sealed: str) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(table.update().where(table.c.id == credential_id).values(sealed_password=sealed))

    def _delete(self, account_id: str, credential_id: str) -> bool:
        with self.store.engine.begin() as conn:
            result = conn.execute(table.delete().where(table.c.account_id == account_id, table.c.id == credential_id))
        return result.rowcount == 1

    # -- what the routes and the session create call -------------------------

    async def create(self, account_id: str, body: CreateCredentialBody) -> Row:
        sealer = self._sealer_or_refuse()
        registry = registry_host(body.registry)
        row: Row = {
            "id": str(uuid.uuid4()),
            "account_id": account_id,
            "registry": registry,
            "username": body.username,
            "sealed_password": sealer.seal(body.password, _bound_to(account_id, registry, body.username)),
            "created_at": time.time(),
        }
        if not await self.store.run(self._insert, row):
            raise errors.Conflict(
                f"this account already has a login for {registry}: delete it first to give another",
                code="registry_credential_exists",
            )
        return row

    async def list(self, account_id: str) -> list[Row]:
        return await self.store.run(self._list, account_id)

    async def delete(self, account_id: str, credential_id: str) -> None:
        if not await self.store.run(self._delete, account_id, credential_id):
            raise errors.NotFound(
                f"registry credential {credential_id} not found", code="registry_credential_not_found"
            )

    async def login_for(self, account_id: str, image: str) -> RegistryLogin | None:
        """The account's login for the registry ``image`` is pulled from, if it gave one."""
        if self._sealer is None:
            return None
        try:
            registry = parse_reference(image).domain.lower()
        except BadReference:
            return None  # a built-in image's name, or one the host will refuse
        row = await self.store.run(self._for_registry, account_id, registry)
        if row is None:
            return None
        bound_to = _bound_to(account_id, registry, row["username"])
        try:
            opened = self._sealer.open(row["sealed_password"], bound_to)
        except SealBroken:
            log.warning("registry login %s of account %s does not open: key changed?", row["id"], account_id)
            raise errors.Conflict(
                f"the stored login for {registry} can no longer be read (the operator replaced "
                "registry_credentials_key without keeping the old one in registry_credentials_previous_keys): "
                "delete it and give it again",
                code="registry_credential_unusable",
            ) from None
        if opened.by_previous_key:  # a key rotation under way: seal it under the current key
            await self.store.run(self._reseal, row["id"], self._sealer.seal(opened.plaintext, bound_to))
        return RegistryLogin(row["username"], opened.plaintext)


def register_registry_credential_routes(app: QuartTrio, logins: RegistryLogins) -> None:
    @app.post("/v1/registry-credentials")
    @requires("workspaces.write", action="registry_credential.create", resource="registry_credential")
    async def create_registry_credential() -> Response:
        body = await parse_body(CreateCredentialBody)
        row = await logins.create(principal().account_id, body)
        audit_resource(row["id"])
        return json_response(_public(row), status=201)

    @app.get("/v1/registry-credentials")
    @requires("workspaces.read", action="registry_credential.list", resource="registry_credential")
    async def list_registry_credentials() -> Response:
        rows = await logins.list(principal().account_id)
        return json_response({"registry_credentials": [_public(r) for r in rows]})

    @app.delete("/v1/registry-credentials/<raw_id>")
    @requires("workspaces.write", action="registry_credential.delete", resource="registry_credential")
    async def delete_registry_credential(raw_id: str) -> Response:
        credential_id = path_id(raw_id, "registry credential")
        await logins.delete(principal().account_id, credential_id)
        audit_resource(credential_id)
        return Response(b"", status=204)
