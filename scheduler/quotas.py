"""Per-account quotas: what one tenant may hold at once, enforced where it is inserted.

Limits: concurrent sessions (creating, running or paused), the vCPUs and
memory those sessions reserve (their ``limits``, or their host's defaults),
workspaces, queued jobs (queued or scheduled) and webhooks. The operator
sets everyone's defaults (``quotas.default``); an account's ``billing.write``
may change its own (``PUT``/``PATCH /v1/quotas``), up to the operator's
``quotas.ceiling``.

A check and the insert it guards are one transaction that first takes a
lock on the account's row (a no-op UPDATE: a row lock on PostgreSQL, the
write lock on SQLite), so two creates racing for the last slot are
serialized and the second sees the first: they cannot both pass.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import sqlalchemy as sa

from chaser.wire import errors
from scheduler.core.session_states import ACTIVE
from scheduler.quota_settings import QuotaLimits, QuotaSettings, Usage
from scheduler.store.schema import account_quotas, accounts, jobs, sessions, webhooks, workspaces

QUEUED = ("queued", "scheduled")
# What a session reserves when neither it nor its host says (the agent's own default).
FALLBACK_CPUS = 1.0
FALLBACK_MEMORY_MB = 1024


class QuotaExceeded(errors.TooManyRequests):
    code = "quota_exceeded"


def effective(settings: QuotaSettings, overrides: QuotaLimits) -> QuotaLimits:
    """The account's limits: its overrides over the operator's defaults."""
    given = overrides.model_dump(exclude_none=True)
    return QuotaLimits(**{**settings.default.model_dump(), **given})


def check_ceiling(settings: QuotaSettings, overrides: QuotaLimits) -> None:
    """422 for an override above the operator's ceiling (an account cannot lift itself out of reach)."""
    ceiling = settings.ceiling.model_dump()
    for name, value in overrides.model_dump(exclude_none=True).items():
        top = ceiling[name]
        if top is not None and value > top:
            raise errors.InvalidInput(
                f"{name} may be at most {top} (the operator's ceiling)", code="quota_above_ceiling"
            )


def refusal(limits: QuotaLimits, used: Usage, adding: Usage) -> QuotaExceeded | None:
    """The first limit ``adding`` would take ``used`` past, as the error to raise; a pure function."""
    for f in fields(Usage):
        more = getattr(adding, f.name)
        limit = getattr(limits, f.name)
        if not more or limit is None:
            continue
        now = getattr(used, f.name)
        if now + more > limit + 1e-9:
            return QuotaExceeded(
                f"quota exceeded: {f.name} limit is {_show(limit)}, {_show(now)} in use, this needs {_show(more)} more",
                details={"limit": f.name, "max": limit, "used": now, "requested": more},
            )
    return None


def _show(value: float) -> str:
    return f"{value:g}"


# -- in the store's transactions --------------------------------------------


def overrides_in(conn: sa.Connection, account_id: str) -> QuotaLimits:
    found = conn.execute(sa.select(account_quotas.c.limits).where(account_quotas.c.account_id == account_id)).first()
    return QuotaLimits.model_validate(found.limits or {}) if found is not None else QuotaLimits()


def usage_in(conn: sa.Connection, account_id: str, only: Usage | None = None) -> Usage:
    """The account's usage (of the limits ``only`` adds to, if given; the rest reads 0)."""

    def wanted(*names: str) -> bool:
        return only is None or any(getattr(only, n) for n in names)

    counts: dict[str, Any] = {}
    if wanted("sessions", "cpus", "memory_mb"):
        query = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sessions.c.reserved_cpus), 0.0),
            sa.func.coalesce(sa.func.sum(sessions.c.reserved_memory_mb), 0),
        ).where(sessions.c.account_id == account_id, sessions.c.status.in_(ACTIVE))
        count, cpus, memory = conn.execute(query).one()
        counts.update(sessions=int(count), cpus=float(cpus), memory_mb=int(memory))
    if wanted("workspaces"):
        query = sa.select(sa.func.count()).where(
            workspaces.c.account_id == account_id, workspaces.c.status != "deleting"
        )
        counts["workspaces"] = int(conn.execute(query).scalar_one())
    if wanted("queued_jobs"):
        query = sa.select(sa.func.count()).where(jobs.c.account_id == account_id, jobs.c.status.in_(QUEUED))
        counts["queued_jobs"] = int(conn.execute(query).scalar_one())
    if wanted("webhooks"):
        counts["webhooks"] = int(
            conn.execute(sa.select(sa.func.count()).where(webhooks.c.account_id == account_id)).scalar_one()
        )
    return Usage(**counts)


class QuotaGuard:
    """Called first in each insert's transaction: lock the account, count, refuse past a limit."""

    def __init__(self, settings: QuotaSettings) -> None:
        self.settings = settings

    def __call__(self, conn: sa.Connection, account_id: str, adding: Usage) -> None:
        conn.execute(accounts.update().where(accounts.c.id == account_id).values(kind=accounts.c.kind))
        limits = effective(self.settings, overrides_in(conn, account_id))
        error = refusal(limits, usage_in(conn, account_id, only=adding), adding)
        if error is not None:
            raise error


def reservation(limits: dict[str, Any] | None, host_limits: dict[str, Any] | None) -> tuple[float, int]:
    """The vCPUs and MiB a session reserves: its own limits, else its host's defaults."""
    default = (host_limits or {}).get("default") or {}
    own = limits or {}
    cpus = own.get("cpus") or default.get("cpus") or FALLBACK_CPUS
    memory = own.get("memory_mb") or default.get("memory_mb") or FALLBACK_MEMORY_MB
    return float(cpus), int(memory)
