"""The audit trail: an event for every mutating call and every refused call, append-only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
import trio

from scheduler.store.schema import audit_events
from tests.tenancy.conftest import Tenants
from tests.tenancy.routes import ROUTES


async def all_events(api: httpx.AsyncClient, **params: str) -> list[dict[str, object]]:
    """Every event, following the cursor two at a time (pagination is part of the test)."""
    events: list[dict[str, object]] = []
    cursor = None
    while True:
        page = await api.get("/v1/audit", params={"limit": "2", **params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        events += page.json()["events"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return events


async def test_every_mutation_is_recorded(tenants: Tenants) -> None:
    user = await tenants.user("aud@test.invalid")
    org = await tenants.org(user, "Audited")
    api = await tenants.user("aud@test.invalid", account=org["id"])
    acme = f"/v1/accounts/{org['id']}"
    session = (await api.post("/v1/sessions", json={"ephemeral": True})).json()
    calls = [
        ("POST", "/v1/exec", {"session_id": session["id"], "command": "true"}),
        ("PATCH", f"/v1/sessions/{session['id']}", {"timeout_ms": 600_000}),
        ("POST", f"/v1/sessions/{session['id']}/tokens", {}),
        ("DELETE", f"/v1/sessions/{session['id']}/tokens", None),
        ("DELETE", f"/v1/sessions/{session['id']}", None),
        ("POST", f"{acme}/members", {"email": "m@test.invalid"}),
        ("PATCH", f"{acme}/members/m@test.invalid", {"role": "admin"}),
        ("DELETE", f"{acme}/members/m@test.invalid", None),
        ("POST", f"{acme}/service-accounts", {"name": "bot"}),
        ("DELETE", f"{acme}/service-accounts/bot", None),
        ("POST", "/v1/keys", {"name": "k"}),
        ("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/", "events": ["job.failed"], "active": False}),
        ("PATCH", acme, {"name": "Audited Too"}),
        ("PUT", "/v1/quotas", {"webhooks": 5}),
        ("PATCH", "/v1/quotas", {"webhooks": None}),
    ]
    made: dict[str, str] = {}
    for method, path, body in calls:
        response = await api.request(method, path, json=body)
        assert response.status_code < 300, (method, path, response.text)
        if path in ("/v1/keys", "/v1/webhooks"):
            made[path] = response.json()["id"]
    for method, path, body in [
        ("PATCH", f"/v1/webhooks/{made['/v1/webhooks']}", {"active": True}),
        ("POST", f"/v1/webhooks/{made['/v1/webhooks']}/ping", None),
        ("DELETE", f"/v1/webhooks/{made['/v1/webhooks']}", None),
        ("DELETE", f"/v1/keys/{made['/v1/keys']}", None),
    ]:
        assert (await api.request(method, path, json=body)).status_code < 300
    failed = await api.post("/v1/webhooks", json={"url": "gopher://x"})  # a failed mutation is recorded too

    events = await all_events(api)
    assert len({e["id"] for e in events}) == len(events)
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), key=int, reverse=True)
    actions = {e["action"] for e in events}
    # Workspace, snapshot, job and VM lifecycle mutations are proven where
    # their fixtures are: test_workspaces_api.py, test_jobs_api.py and
    # test_vm_snapshots.py (``..._are_audited``); registry logins in
    # test_registry_credentials.py (with no secret in the rows), image pulls
    # in test_image_pulls.py.
    elsewhere = (
        "workspace.", "snapshot.", "job.", "session.pause", "session.resume", "session.fork",
        "registry_credential.", "image.",
    )  # fmt: skip
    mutating = {r.action for r in ROUTES if r.mutating and not r.action.startswith(elsewhere)} - {
        "account.create",
        "account.delete",
    }
    assert mutating <= actions, mutating - actions
    create = next(e for e in events if e["action"] == "session.create")
    assert create["resource"] == {"type": "session", "id": session["id"]}
    assert create["actor"]["type"] == "user" and create["actor"]["name"] == "aud@test.invalid"
    assert create["actor"]["auth_method"] == "jwt" and create["source_ip"] == "127.0.0.1"
    assert create["result"] == "success" and create["status"] == 201 and create["account_id"] == org["id"]
    assert failed.status_code == 422
    bad = next(e for e in events if e["action"] == "webhook.create" and e["result"] == "failure")
    assert bad["error_code"] == "invalid_request"
    # The organization's creation is in the trail of the account it was made from.
    personal = await all_events(user, action="account.create")
    assert [e["resource"]["id"] for e in personal] == [org["id"]]
    assert (await user.delete(acme)).status_code == 204
    assert [e["action"] for e in await all_events(user, action="account.delete")] == []  # recorded under the org


async def test_refusals_are_recorded(tenants: Tenants) -> None:
    owner = tenants.system.client
    key = await tenants.key(owner, scopes=["sessions.read"])
    limited = await tenants.client(key)
    assert (await limited.post("/v1/webhooks", json={})).status_code == 403
    key_id = (await owner.get("/v1/keys")).json()["keys"][0]["id"]
    await owner.delete(f"/v1/keys/{key_id}")
    assert (await limited.get("/v1/sessions")).status_code == 401
    anonymous = await tenants.client("sk_" + "x" * 40)
    assert (await anonymous.get("/v1/sessions")).status_code == 401

    denied = await all_events(owner, result="denied")
    scope = next(e for e in denied if e["action"] == "webhook.create")
    assert scope["status"] == 403 and scope["error_code"] == "missing_scope" and scope["actor"]["key_id"] == key_id
    revoked = next(e for e in denied if e["action"] == "auth.failed")
    assert revoked["actor"]["key_id"] == key_id and revoked["status"] == 401
    # The unknown key belongs to no account: recorded, but in no account's trail.
    assert all(e["actor"]["type"] != "anonymous" for e in denied)


async def test_filters(tenants: Tenants) -> None:
    api = tenants.system.client
    first = await api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/a", "events": ["job.failed"]})
    second = await api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/b", "events": ["job.failed"]})
    await api.delete(f"/v1/webhooks/{first.json()['id']}")
    by_resource = await all_events(api, resource=first.json()["id"])
    assert [e["action"] for e in by_resource] == ["webhook.delete", "webhook.create"]
    assert {e["resource"]["id"] for e in await all_events(api, action="webhook.create")} == {
        first.json()["id"],
        second.json()["id"],
    }
    keys = (await api.get("/v1/keys")).json()["keys"]
    assert len(await all_events(api, actor=keys[0]["id"])) == 3
    assert len(await all_events(api, resource_type="webhook", result="success")) == 3
    now = datetime.now(UTC)
    assert len(await all_events(api, since=(now - timedelta(minutes=5)).isoformat())) == 3
    assert await all_events(api, until=(now - timedelta(minutes=5)).isoformat()) == []
    for params in ({"cursor": "!!"}, {"result": "maybe"}, {"limit": "0"}, {"since": "yesterday"}, {"x": "1"}):
        assert (await api.get("/v1/audit", params=params)).status_code == 422, params


@pytest.mark.parametrize("statement", ["UPDATE audit_events SET result = 'success'", "DELETE FROM audit_events"])
async def test_the_database_refuses_to_rewrite_the_trail(tenants: Tenants, statement: str) -> None:
    await tenants.system.client.post("/v1/webhooks", json={})  # one event at least
    store = tenants.system.store()

    def tamper() -> None:
        with store.engine.begin() as conn:
            conn.execute(sa.text(statement))

    def count() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar_one())

    try:
        before = await trio.to_thread.run_sync(count)
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            await trio.to_thread.run_sync(tamper)
        assert await trio.to_thread.run_sync(count) == before > 0
    finally:
        store.close()


async def test_session_endpoint_mutations_and_refusals_are_recorded(tenants: Tenants) -> None:
    api = tenants.system.client
    session_id = (await api.post("/v1/sessions", json={"ephemeral": True})).json()["id"]
    assert (await api.put(f"/s/{session_id}/files/root/note", content=b"hi")).status_code == 201
    assert (await api.get(f"/s/{session_id}/files/root/note")).content == b"hi"  # a read: not recorded
    reader = await tenants.client(await tenants.key(api, scopes=["files.read"]))
    assert (await reader.put(f"/s/{session_id}/files/root/note", content=b"x")).status_code == 403
    minted = await api.post(f"/v1/sessions/{session_id}/tokens", json={"scopes": ["files.write"]})
    token = minted.json()["token"]
    by_token = await api.request(
        "DELETE", f"/s/{session_id}/files/root/note", params={"chaser_token": token}, headers={"Authorization": ""}
    )
    assert by_token.status_code == 200, by_token.text

    events = await all_events(api, resource=session_id)
    edge = [e for e in events if e["request"]["path"].startswith("/s/")]
    assert [(e["action"], e["result"], e["status"]) for e in edge] == [
        ("file.delete", "success", 200),
        ("file.upload", "denied", 403),
        ("file.upload", "success", 201),
    ]
    delete, denied, upload = edge
    assert delete["actor"] == {  # the token is in no path recorded
        "type": "session_token", "id": None, "name": None, "key_id": None, "auth_method": "session_token",
    }  # fmt: skip
    assert token not in str(events)
    assert denied["error_code"] == "missing_scope" and upload["actor"]["auth_method"] == "api_key"
    await api.delete(f"/v1/sessions/{session_id}")
