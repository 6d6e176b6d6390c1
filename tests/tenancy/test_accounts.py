"""Organizations, members, roles, service accounts, and choosing the active account."""

from __future__ import annotations

import json

import trio

from tests.tenancy.conftest import Tenants


async def test_roles_are_enforced(tenants: Tenants) -> None:
    owner = await tenants.user("olga@test.invalid")
    org = await tenants.org(owner, "Acme Engineering")
    assert org["kind"] == "organization" and org["role"] == "owner"
    acme = f"/v1/accounts/{org['id']}"
    o = await tenants.user("olga@test.invalid", account=org["id"])
    for email, role in (("dana@test.invalid", "admin"), ("mo@test.invalid", "member")):
        added = await o.post(f"{acme}/members", json={"email": email, "role": role})
        assert added.status_code == 201 and added.json()["role"] == role
    admin = await tenants.user("dana@test.invalid", account="Acme Engineering")
    member = await tenants.user("mo@test.invalid", account="Acme Engineering")

    # A member uses resources, and manages nothing.
    assert (await member.get("/v1/sessions")).status_code == 200
    assert (await member.get("/v1/webhooks")).status_code == 200
    assert (await member.get(f"{acme}/members")).status_code == 200
    for method, path, body in [
        ("POST", f"{acme}/members", {"email": "x@test.invalid"}),
        ("PATCH", f"{acme}/members/dana@test.invalid", {"role": "member"}),
        ("DELETE", f"{acme}/members/dana@test.invalid", None),
        ("POST", "/v1/keys", {"name": "mine"}),
        ("GET", "/v1/keys", None),
        ("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/", "events": ["session.created"]}),
        ("GET", "/v1/audit", None),
        ("GET", f"{acme}/service-accounts", None),
        ("PATCH", acme, {"name": "Mine Now"}),
        ("DELETE", acme, None),
    ]:
        response = await member.request(method, path, json=body)
        assert response.status_code == 403, f"member {method} {path}: {response.text}"
        assert response.json()["error"]["code"] == "insufficient_role"

    # An admin manages members (not owners), keys, webhooks; not the organization itself.
    assert (await admin.post(f"{acme}/members", json={"email": "new@test.invalid"})).status_code == 201
    assert (await admin.patch(f"{acme}/members/new@test.invalid", json={"role": "admin"})).status_code == 200
    assert (await admin.delete(f"{acme}/members/new@test.invalid")).status_code == 204
    assert (
        await admin.post(f"{acme}/members", json={"email": "boss@test.invalid", "role": "owner"})
    ).status_code == 403
    assert (await admin.patch(f"{acme}/members/olga@test.invalid", json={"role": "member"})).status_code == 403
    assert (await admin.delete(f"{acme}/members/olga@test.invalid")).status_code == 403
    assert (await admin.patch(f"{acme}/members/mo@test.invalid", json={"role": "owner"})).status_code == 403
    assert (await admin.post("/v1/keys", json={"name": "admin key"})).status_code == 201
    assert (await admin.get("/v1/audit")).status_code == 200
    assert (await admin.patch(acme, json={"name": "Renamed"})).status_code == 403
    assert (await admin.delete(acme)).status_code == 403

    # Owners: an organization always keeps one.
    last = await o.patch(f"{acme}/members/olga@test.invalid", json={"role": "admin"})
    assert last.status_code == 409 and last.json()["error"]["code"] == "last_owner"
    assert (await o.delete(f"{acme}/members/olga@test.invalid")).status_code == 409
    assert (await o.patch(f"{acme}/members/dana@test.invalid", json={"role": "owner"})).status_code == 200
    assert (await o.patch(acme, json={"name": "Acme Labs"})).status_code == 200
    # Anyone may leave; then the organization is gone for them.
    assert (await member.delete(f"{acme}/members/mo@test.invalid")).status_code == 204
    gone = await member.get("/v1/sessions")
    assert gone.status_code == 404  # "Acme Engineering" no longer names anything mo can see
    members = (await o.get(f"{acme}/members")).json()["members"]
    assert sorted((m["email"], m["role"]) for m in members) == [
        ("dana@test.invalid", "owner"),
        ("olga@test.invalid", "owner"),
    ]
    assert (await o.delete(acme)).status_code == 204
    assert (await o.get(acme)).status_code == 404


async def test_account_selection(tenants: Tenants) -> None:
    user = await tenants.user("sel@test.invalid")
    org = await tenants.org(user, "Acme Engineering")
    other = await tenants.org(await tenants.user("stranger@test.invalid"), "Umbrella")
    token = tenants.issuer.token("sel@test.invalid")
    personal_id = (await user.get("/v1/accounts")).json()["active"]
    for selector, expected in [
        (None, personal_id),
        ("personal", personal_id),
        ("sel@test.invalid", personal_id),
        (personal_id, personal_id),
        (org["id"], org["id"]),
        ("Acme Engineering", org["id"]),
    ]:
        api = await tenants.client(token, account=selector)
        assert (await api.get("/v1/accounts")).json()["active"] == expected, selector
        assert (await api.get("/v1/sessions")).status_code == 200
    for selector in ("acme engineering", "Umbrella", other["id"], "nobody"):
        api = await tenants.client(token, account=selector)
        refused = await api.get("/v1/sessions")
        assert refused.status_code == 404, selector
        assert refused.json()["error"] == {"code": "account_not_found", "message": f"account {selector!r} not found"}

    # The seeds' header, sent by curl exactly as written there.
    done = await trio.run_process(
        ["curl", "-sS", "--fail-with-body", f"{tenants.system.api_url}/v1/accounts/Acme%20Engineering",
         "-H", f"Authorization: Bearer {token}", "-H", "X-Chaser-Account: Acme Engineering"],
        capture_stdout=True,
    )  # fmt: skip
    assert json.loads(done.stdout)["id"] == org["id"]


async def test_keys_are_bound_to_their_account(tenants: Tenants) -> None:
    user = await tenants.user("kb@test.invalid")
    first = await tenants.org(user, "First Org")
    second = await tenants.org(user, "Second Org")
    in_first = await tenants.user("kb@test.invalid", account=first["id"])
    secret = await tenants.key(in_first)
    assert (await (await tenants.client(secret)).get("/v1/accounts")).json()["accounts"][0]["id"] == first["id"]
    assert (await (await tenants.client(secret, account="First Org")).get("/v1/sessions")).status_code == 200
    for selector in ("personal", "Second Org", second["id"]):
        refused = await (await tenants.client(secret, account=selector)).get("/v1/sessions")
        assert refused.status_code == 403, selector
        assert refused.json()["error"]["code"] == "key_bound_to_account"
    # The owner leaves the first org: their keys there stop working at once.
    await in_first.post(f"/v1/accounts/{first['id']}/members", json={"email": "heir@test.invalid", "role": "owner"})
    assert (await in_first.delete(f"/v1/accounts/{first['id']}/members/kb@test.invalid")).status_code == 204
    assert (await (await tenants.client(secret)).get("/v1/sessions")).status_code == 401


async def test_service_accounts_hold_scoped_keys(tenants: Tenants) -> None:
    owner = await tenants.user("sa@test.invalid")
    org = await tenants.org(owner, "Robots Inc")
    api = await tenants.user("sa@test.invalid", account=org["id"])
    base = f"/v1/accounts/{org['id']}/service-accounts"
    created = await api.post(base, json={"name": "ci-bot"})
    assert created.status_code == 201 and created.json()["role"] == "member"
    assert (await api.post(base, json={"name": "CI-BOT"})).status_code == 409
    assert (await api.post(base, json={"name": "bad name!"})).status_code == 422
    key = await api.post("/v1/keys", json={"name": "ci", "service_account": "ci-bot", "scopes": ["sessions.read"]})
    assert key.status_code == 201
    assert key.json()["acts_as"] == {"type": "service_account", "id": created.json()["id"], "name": "ci-bot"}
    bot = await tenants.client(key.json()["secret"])
    assert (await bot.get("/v1/sessions")).status_code == 200
    assert (await bot.get("/v1/webhooks")).status_code == 403
    assert (await bot.post("/v1/accounts", json={"name": "Bot Org"})).status_code == 403
    # A full-access key of a member service account still has only the member role.
    full = await api.post("/v1/keys", json={"name": "ci full", "service_account": created.json()["id"]})
    bot_full = await tenants.client(full.json()["secret"])
    assert (await bot_full.post("/v1/keys", json={"name": "more"})).json()["error"]["code"] == "insufficient_role"
    events = (await api.get("/v1/audit", params={"actor": created.json()["id"]})).json()["events"]
    assert events and all(e["actor"]["type"] == "service_account" for e in events)
    # Deleting the service account deletes its keys.
    assert (await api.delete(f"{base}/ci-bot")).status_code == 204
    assert (await bot.get("/v1/sessions")).status_code == 401
    assert (await api.get(f"{base}/ci-bot")).status_code == 404
    personal = await owner.post("/v1/accounts/personal/service-accounts", json={"name": "x"})
    assert personal.status_code == 422 and personal.json()["error"]["code"] == "personal_account"


async def test_organization_names(tenants: Tenants) -> None:
    user = await tenants.user("names@test.invalid")
    await tenants.org(user, "Taken Name")
    taken = await user.post("/v1/accounts", json={"name": "taken name"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "name_taken"
    for name in ("personal", "", " lead", "a@b", "x" * 65, "00000000-0000-0000-0000-000000000000"):
        assert (await user.post("/v1/accounts", json={"name": name})).status_code == 422, name
    # With API keys alone (no login), a new organization comes with its first key.
    made = await tenants.system.client.post("/v1/accounts", json={"name": "Keyed", "key": {"name": "first"}})
    assert made.status_code == 201
    keyed = await tenants.client(made.json()["key"]["secret"])
    assert (await keyed.get("/v1/accounts")).json()["accounts"][0]["name"] == "Keyed"
    assert (await keyed.get("/v1/sessions")).status_code == 200
