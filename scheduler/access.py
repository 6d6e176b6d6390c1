"""What each endpoint requires, declared in one place: its ``@requires`` line.

``@requires(scope, role=..., action=...)`` names the scope a credential
must grant (or ``None``: any valid credential; ``FULL_ACCESS``: only a
credential without scope restrictions), the least role the caller needs in
the active account, and the action name the audit trail records. The checks
run before the handler, so a refused call does nothing (and the 403 names
what is missing); ``requirement_of`` lets the audit trail and the tests
read the declarations back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec

from quart import Response, g

from scheduler.auth import FULL_ACCESS, ROLES, SCOPES, Principal

P = ParamSpec("P")

__all__ = ["FULL_ACCESS", "Requirement", "audit_resource", "principal", "requirement_of", "requires"]


@dataclass(frozen=True)
class Requirement:
    scope: str | None
    role: str
    action: str
    resource: str | None  # the kind of thing the action is on, for the audit trail


def requires(
    scope: str | None, *, role: str = "member", action: str | None = None, resource: str | None = None
) -> Callable[[Callable[P, Awaitable[Response]]], Callable[P, Awaitable[Response]]]:
    """Declare the scope and role a route needs; the checks happen before the handler."""
    if scope is not None and scope != FULL_ACCESS and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def decorate(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
        name = action or handler.__name__
        kind = resource or (name.split(".")[0] if "." in name else None)
        requirement = Requirement(scope, role, name, kind)

        @wraps(handler)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
            caller = principal()
            caller.require(scope)
            caller.require_role(role)
            return await handler(*args, **kwargs)

        wrapper.requirement = requirement  # type: ignore[attr-defined]
        return wrapper

    return decorate


def requirement_of(view: Any) -> Requirement | None:
    found = getattr(view, "requirement", None)
    return found if isinstance(found, Requirement) else None


def principal() -> Principal:
    return g.principal  # type: ignore[no-any-return]


def audit_resource(resource_id: str) -> None:
    """Name the resource a call made (a create's new id) for its audit event."""
    g.audit_resource_id = resource_id
