"""Each scope grants exactly its endpoints; the 403 names the missing scope.

For every scope (billing ones included, which no endpoint needs yet) a key
holding only that scope calls every endpoint, the session endpoints of the
edge router included. Ids are ones nobody has and bodies are malformed, so
a call that passes the scope check ends in a 404/400/422 and changes
nothing; one that does not pass ends in a 403.
"""

from __future__ import annotations

import re
import secrets
import uuid
from pathlib import Path

from scheduler.agents import AgentClient
from scheduler.api import create_app
from scheduler.auth import SCOPES
from scheduler.jobs import JobService, register_job_routes
from scheduler.sessions import SessionService
from scheduler.store import Store
from scheduler.workspaces import WorkspaceService
from tests.conftest import scheduler_config
from tests.tenancy.conftest import Tenants
from tests.tenancy.routes import EDGE_ROUTES, FULL, ROUTES, Route


def fill(route: Route) -> str:
    nobody = str(uuid.uuid4())
    return route.path.format(
        session=nobody, key=nobody, webhook=nobody, account="personal", member="nobody@test.invalid",
        service_account=nobody, workspace=f"nobody-{nobody[:8]}", snapshot=nobody, job=nobody, credential=nobody,
        image=nobody,
    )  # fmt: skip


def test_the_table_covers_every_endpoint(tmp_path: Path) -> None:
    config = scheduler_config(f"sqlite:///{tmp_path / 'db'}", secrets.token_hex(32), "sk_" + "a" * 40)
    store = Store(config.database_url)
    try:
        sessions = SessionService(store, AgentClient("token"), config, "")
        app = create_app(config, sessions, WorkspaceService(sessions))
        register_job_routes(app, JobService(sessions, config))  # as scheduler.main does
    finally:
        store.close()
    served = {
        (method, re.sub(r"<[^>]+>", "*", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    listed = {(r.method, re.sub(r"{[^}]+}", "*", r.path)) for r in ROUTES}
    assert served == listed, "add new endpoints (with their scope) to tests/tenancy/routes.py"


async def test_each_scope_grants_exactly_its_endpoints(sqlite_tenants: Tenants) -> None:
    owner = sqlite_tenants.system.client
    for scope in sorted(SCOPES):
        key = await sqlite_tenants.key(owner, name=f"only {scope}", scopes=[scope])
        api = await sqlite_tenants.client(key)
        for route in ROUTES:
            body = b"{" if route.method in ("POST", "PATCH") else b""
            response = await api.request(
                route.method, fill(route), content=body, headers={"Content-Type": "application/json"}
            )
            where = f"{scope} -> {route.method} {route.path}: {response.status_code} {response.text}"
            if route.scope is None or route.scope == scope:
                assert response.status_code != 403, where
                assert response.status_code < 500, where
            else:
                assert response.status_code == 403, where
                error = response.json()["error"]
                assert error["code"] == "missing_scope", where
                needed = "full access" if route.scope == FULL else repr(route.scope)
                assert needed in error["message"], where


async def test_a_key_without_scopes_reaches_every_endpoint(sqlite_tenants: Tenants) -> None:
    api = await sqlite_tenants.client(await sqlite_tenants.key(sqlite_tenants.system.client, name="full"))
    for route in ROUTES:
        body = b"{" if route.method in ("POST", "PATCH") else b""
        response = await api.request(
            route.method, fill(route), content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code not in (401, 403), f"{route.method} {route.path}: {response.text}"
        assert response.status_code < 500, f"{route.method} {route.path}: {response.text}"


async def test_each_scope_grants_exactly_its_session_endpoints(sqlite_tenants: Tenants) -> None:
    owner = sqlite_tenants.system.client
    nobody = str(uuid.uuid4())
    for scope in [*sorted(SCOPES), None]:
        key = await sqlite_tenants.key(owner, name=f"edge {scope}", **({"scopes": [scope]} if scope else {}))
        api = await sqlite_tenants.client(key)
        for route in EDGE_ROUTES:
            path = route.path.format(session=nobody)
            response = await api.request(route.method, path, content=b"{", headers=route.headers())
            where = f"{scope} -> {route.method} {path} (websocket: {route.websocket}): {response.text}"
            if scope is None or route.scope == scope:
                assert response.status_code == 404, where
                assert response.json()["error"]["code"] == "session_not_found", where
            else:
                assert response.status_code == 403, where
                error = response.json()["error"]
                assert error["code"] == "missing_scope" and repr(route.scope) in error["message"], where
