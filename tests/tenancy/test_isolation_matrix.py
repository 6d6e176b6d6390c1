"""Account A can neither see nor touch anything of account B, through any endpoint.

B is an organization holding one of each resource (a running session, an
API key, a webhook, a service account, a second member, audit events). A
calls every endpoint with B's ids, with B named in ``X-Chaser-Account``,
and lists everything, both with an API key and with a JWT; every answer is
a 404 (never a 403 that would reveal what exists) or a list without B's
things, and afterwards B's resources are exactly as they were.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.tenancy.conftest import Tenants
from tests.tenancy.routes import EDGE_ROUTES, ROUTES, EdgeRoute, Route


async def build_b(tenants: Tenants) -> dict[str, Any]:
    b = await tenants.user("bea@test.invalid")
    org = await tenants.org(b, "B Industries")
    b_org = await tenants.user("bea@test.invalid", account=org["id"])
    key = await b_org.post("/v1/keys", json={"name": "b key"})
    service_account = await b_org.post(f"/v1/accounts/{org['id']}/service-accounts", json={"name": "b-ci"})
    member = await b_org.post(f"/v1/accounts/{org['id']}/members", json={"email": "bob@test.invalid"})
    webhook = await b_org.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/b", "events": ["session.created"], "active": False}
    )
    b_key_api = await tenants.client(key.json()["secret"])
    session = await b_key_api.post("/v1/sessions", json={"ephemeral": True})
    job = await b_org.post("/v1/jobs", json={"kind": "sandbox.exec", "input": {"ephemeral": True, "command": "true"}})
    workspace = await b_org.post("/v1/workspaces", json={"name": "b-ws"})
    snap = await b_org.post("/v1/workspaces/b-ws/snapshots", json={})
    template = await b_org.patch("/v1/workspaces/b-ws", json={"is_template": True})
    login = {"registry": "registry.b.invalid", "username": "bea", "password": "b-registry-password"}
    credential = await b_org.post("/v1/registry-credentials", json=login)
    made = (key, service_account, member, webhook, session, workspace, snap, job, credential)
    assert all(r.status_code == 201 for r in made)
    assert template.status_code == 200
    return {
        "api": b_org,
        "org": org,
        "key": key.json()["id"],
        "secret": key.json()["secret"],
        "service_account": service_account.json()["id"],
        "member": member.json()["user_id"],
        "webhook": webhook.json()["id"],
        "session": session.json()["id"],
        "workspace": workspace.json()["id"],
        "snapshot": snap.json()["id"],
        "job": job.json()["id"],
        "credential": credential.json()["id"],
        "image": str(uuid.uuid4()),  # no host pulls images here: B's pull is an id A does not have
    }


def b_path(route: Route, b: dict[str, Any]) -> str:
    return route.path.format(
        session=b["session"], key=b["key"], webhook=b["webhook"], account=b["org"]["id"], member=b["member"],
        service_account=b["service_account"], workspace=b["workspace"], snapshot=b["snapshot"], job=b["job"],
        credential=b["credential"], image=b["image"],
    )  # fmt: skip


def body_for(route: Route, b: dict[str, Any]) -> dict[str, Any] | None:
    """A valid body, so only ownership can stop the call."""
    bodies: dict[str, dict[str, Any]] = {
        "POST /v1/exec": {"session_id": b["session"], "command": "touch /root/pwned"},
        "PATCH /v1/sessions/{session}": {"timeout_ms": 1000},
        "POST /v1/sessions/{session}/tokens": {},
        "PATCH /v1/accounts/{account}": {"name": "Pwned"},
        "POST /v1/accounts/{account}/members": {"email": "eve@test.invalid", "role": "owner"},
        "PATCH /v1/accounts/{account}/members/{member}": {"role": "owner"},
        "POST /v1/accounts/{account}/service-accounts": {"name": "eve"},
        "PATCH /v1/webhooks/{webhook}": {"url": "http://127.0.0.1:9/eve", "active": True},
        "PATCH /v1/workspaces/{workspace}": {"name": "pwned"},
        "POST /v1/workspaces/{workspace}/clone": {"name": "eve-copy"},
        "POST /v1/workspaces/{workspace}/bootstrap": {},
        "POST /v1/workspaces/{workspace}/snapshots": {},
    }
    return bodies.get(f"{route.method} {route.path}")


def edge_body(route: EdgeRoute) -> bytes:
    """A valid body, so only ownership can stop the call."""
    if route.path.endswith("/fs/rename"):
        return b'{"from": "/etc/hostname", "to": "/root/pwned"}'
    return b"pwned" if route.method in ("PUT", "POST") else b""


async def edge_calls_are_not_found(a: httpx.AsyncClient, b: dict[str, Any]) -> None:
    """B's session endpoints, both URL styles, are unknown to A; naming B's account is too."""
    port = a.base_url.port
    for route in EDGE_ROUTES:
        path = route.path.format(session=b["session"])
        subdomain = route.path.removeprefix("/s/{session}")
        tries = [
            ({}, path),
            ({"Host": f"{b['session']}.localhost:{port}"}, subdomain),
            ({"X-Chaser-Account": b["org"]["id"]}, path),
        ]
        for extra, target in tries:
            response = await a.request(
                route.method, target, content=edge_body(route), headers={**route.headers(), **extra}
            )
            where = f"{route.method} {target} {extra} (websocket: {route.websocket}): {response.text}"
            assert response.status_code == 404, where
            code = "account_not_found" if "X-Chaser-Account" in extra else "session_not_found"
            assert response.json()["error"]["code"] == code, where


def targets_b(route: Route) -> bool:
    return "{" in route.path or route.path == "/v1/exec"


async def snapshot(b: dict[str, Any]) -> dict[str, Any]:
    api: httpx.AsyncClient = b["api"]
    org = b["org"]["id"]
    return {
        "account": (await api.get(f"/v1/accounts/{org}")).json(),
        "members": (await api.get(f"/v1/accounts/{org}/members")).json(),
        "service_accounts": (await api.get(f"/v1/accounts/{org}/service-accounts")).json(),
        "keys": [
            {k: v for k, v in key.items() if k != "last_used_at"} for key in (await api.get("/v1/keys")).json()["keys"]
        ],
        "webhooks": (await api.get("/v1/webhooks")).json(),
        "session": (await api.get(f"/v1/sessions/{b['session']}")).json()["status"],
        "workspaces": (await api.get("/v1/workspaces")).json(),
        "registry_credentials": (await api.get("/v1/registry-credentials")).json(),
        "snapshots": (await api.get(f"/v1/workspaces/{b['workspace']}/snapshots")).json(),
        "files": (await api.post("/v1/exec", json={"session_id": b["session"], "command": "ls /root"})).json()[
            "output"
        ],
    }


async def test_account_a_cannot_reach_account_b(tenants: Tenants) -> None:
    b = await build_b(tenants)
    before = await snapshot(b)
    a_key = tenants.system.client  # the bootstrap user's full-access key (personal account)
    a_jwt = await tenants.user("ann@test.invalid")
    keys = ("key", "service_account", "member", "webhook", "session", "workspace", "snapshot", "job", "credential")
    b_ids = [b[k] for k in keys] + [b["org"]["id"]]

    for a in (a_key, a_jwt):
        for route in ROUTES:
            where = f"{route.method} {route.path}"
            if targets_b(route):
                response = await a.request(route.method, b_path(route, b), json=body_for(route, b))
                assert response.status_code == 404, f"{where}: {response.status_code} {response.text}"
            elif route.method == "GET":
                response = await a.get(route.path)
                assert response.status_code == 200, f"{where}: {response.text}"
                if route.path == "/v1/audit":  # A's own refused attempts name B's ids; nothing of B's trail
                    events = response.json()["events"]
                    assert events and all(e["account_id"] not in (b["org"]["id"], None) for e in events)
                    assert "bea@test.invalid" not in response.text
                else:
                    assert not any(i in response.text for i in b_ids), f"{where} shows B's resources"
            # Naming B as the active account is a 404 for every endpoint (in
            # /v1/accounts/{account}/... the path names it: checked above).
            if "{account}" in route.path:
                continue
            path = route.path.format(
                session="x", key="x", webhook="x", workspace="x", snapshot="x", job="x", credential="x", image="x"
            )
            for selector in (b["org"]["id"], b["org"]["name"]):
                response = await a.request(route.method, path, headers={"X-Chaser-Account": selector})
                assert response.status_code == 404, f"{where} as {selector}: {response.text}"
                assert response.json()["error"]["code"] == "account_not_found"
        await edge_calls_are_not_found(a, b)

    assert await snapshot(b) == before
    # B's key, in turn, is refused in A's accounts: it cannot be redirected.
    b_key = await tenants.client(b["secret"], account="ann@test.invalid")
    assert (await b_key.get("/v1/sessions")).status_code == 404
    await b["api"].delete(f"/v1/sessions/{b['session']}")
    assert (await b["api"].delete(f"/v1/workspaces/{b['workspace']}")).status_code == 204
