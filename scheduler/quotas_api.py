"""``/v1/quotas``: an account's limits, what it uses of them, and its own changes to them.

GET   /v1/quotas   (billing.read)   limits in force, the operator's defaults and
                                    ceiling, the account's overrides, and usage
PUT   /v1/quotas   (billing.write)  replace the account's overrides
PATCH /v1/quotas   (billing.write)  change some; ``null`` returns one to the default

Overrides may lower a limit (keep a CI key from running away) or raise it
up to the operator's ceiling, never past it.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from pydantic import ConfigDict
from quart import Response
from quart_trio import QuartTrio

from scheduler import quotas
from scheduler.access import principal, requires
from scheduler.quota_settings import QuotaLimits, QuotaSettings, Usage
from scheduler.store import Store
from scheduler.store.schema import account_quotas, accounts
from serving.quart_json import json_response, parse_body


class QuotaBody(QuotaLimits):
    model_config = ConfigDict(extra="forbid", strict=True)


def _read(store: Store, account_id: str) -> tuple[QuotaLimits, Usage]:
    with store.engine.connect() as conn:
        return quotas.overrides_in(conn, account_id), quotas.usage_in(conn, account_id)


def _write(store: Store, account_id: str, settings: QuotaSettings, change: dict[str, Any], replace: bool) -> None:
    """Store the account's overrides (all of them, or ``change`` over the current ones), under its lock."""
    with store.engine.begin() as conn:
        conn.execute(accounts.update().where(accounts.c.id == account_id).values(kind=accounts.c.kind))
        current = {} if replace else quotas.overrides_in(conn, account_id).model_dump(exclude_none=True)
        merged = QuotaLimits(**{**current, **change})
        quotas.check_ceiling(settings, merged)
        values = {"limits": merged.model_dump(exclude_none=True), "updated_at": time.time()}
        updated = conn.execute(
            account_quotas.update().where(account_quotas.c.account_id == account_id).values(**values)
        )
        if updated.rowcount == 0:
            conn.execute(sa.insert(account_quotas).values(account_id=account_id, **values))


def register_quota_routes(app: QuartTrio, store: Store, settings: QuotaSettings) -> None:
    async def shown(account_id: str) -> Response:
        overrides, usage = await store.run(_read, store, account_id)
        return json_response(
            {
                "account_id": account_id,
                "limits": quotas.effective(settings, overrides).model_dump(),
                "usage": usage.as_json(),
                "overrides": overrides.model_dump(exclude_none=True),
                "defaults": settings.default.model_dump(),
                "ceiling": settings.ceiling.model_dump(),
            }
        )

    @app.get("/v1/quotas")
    @requires("billing.read", action="quota.get", resource="quota")
    async def get_quotas() -> Response:
        return await shown(principal().account_id)

    @app.put("/v1/quotas")
    @requires("billing.write", role="owner", action="quota.set", resource="quota")
    async def set_quotas() -> Response:
        body = await parse_body(QuotaBody)
        account_id = principal().account_id
        await store.run(_write, store, account_id, settings, body.model_dump(exclude_none=True), True)
        return await shown(account_id)

    @app.patch("/v1/quotas")
    @requires("billing.write", role="owner", action="quota.update", resource="quota")
    async def update_quotas() -> Response:
        body = await parse_body(QuotaBody)
        change = {name: getattr(body, name) for name in body.model_fields_set}
        account_id = principal().account_id
        await store.run(_write, store, account_id, settings, change, False)
        return await shown(account_id)
