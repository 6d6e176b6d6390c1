"""``/v1/workspaces``: create, list, get, rename, template flag, delete; names, selectors, scopes."""

from __future__ import annotations

import pytest

from tests.conftest import System
from tests.workspace_support import ok

NAME_64 = "n" * 64


async def test_create_get_list_patch_delete(ws_system: System) -> None:
    client = ws_system.client
    created = ok(await client.post("/v1/workspaces", json={"session_type": "sandbox", "name": "My.Project_1"}), 201)
    assert created["name"] == "My.Project_1"
    assert created["session_type"] == "sandbox" and created["image"] == "default"
    assert created["is_template"] is False and created["attached_session"] is None
    assert created["source"] is None and created["cloned_from"] is None
    assert created["disk_size_bytes"] == 1 << 30
    assert (ws_system.lxc_path.parent.parent / "pool").exists()

    # selectors: the name in any case, or the UUID
    for selector in ("My.Project_1", "my.project_1", created["id"], created["id"].upper()):
        assert ok(await client.get(f"/v1/workspaces/{selector}"))["id"] == created["id"], selector

    ok(await client.post("/v1/workspaces", json={"name": NAME_64, "image": "debian:bookworm"}), 201)
    listed = ok(await client.get("/v1/workspaces"))
    assert [w["name"] for w in listed["workspaces"]] == ["My.Project_1", NAME_64]
    assert listed["next_cursor"] is None
    first_page = ok(await client.get("/v1/workspaces", params={"limit": "1"}))
    second_page = ok(await client.get("/v1/workspaces", params={"limit": "1", "cursor": first_page["next_cursor"]}))
    assert [w["name"] for w in first_page["workspaces"] + second_page["workspaces"]] == ["My.Project_1", NAME_64]

    renamed = ok(await client.patch("/v1/workspaces/my.project_1", json={"name": "base", "is_template": True}))
    assert renamed["name"] == "base" and renamed["is_template"] is True and renamed["id"] == created["id"]
    assert (await client.get("/v1/workspaces/My.Project_1")).status_code == 404
    templates = ok(await client.get("/v1/workspaces", params={"template": "true"}))["workspaces"]
    assert [w["name"] for w in templates] == ["base"]
    assert ok(await client.patch("/v1/workspaces/BASE", json={"name": "Base"}))["name"] == "Base"  # own name, new case

    assert (await client.delete("/v1/workspaces/base")).status_code == 204
    assert (await client.get(f"/v1/workspaces/{created['id']}")).status_code == 404
    disk = ws_system.lxc_path.parent.parent / "pool" / "disks" / f"{created['id']}.img"
    assert not disk.exists()
    # the name is free again at once
    ok(await client.post("/v1/workspaces", json={"name": "base"}), 201)


async def test_names_are_unique_per_account_ignoring_case(ws_system: System) -> None:
    ok(await ws_system.client.post("/v1/workspaces", json={"name": "ci"}), 201)
    for name in ("ci", "CI", "Ci"):
        duplicate = await ws_system.client.post("/v1/workspaces", json={"name": name})
        assert duplicate.status_code == 409, name
        assert duplicate.json()["error"]["code"] == "workspace_name_taken"
    other = ok(await ws_system.client.post("/v1/workspaces", json={"name": "other"}), 201)
    clash = await ws_system.client.patch(f"/v1/workspaces/{other['id']}", json={"name": "CI"})
    assert clash.status_code == 409
    # another account has its own namespace, and cannot see ours
    stranger = {"Authorization": f"Bearer {await ws_system.new_key('stranger@test.invalid')}"}
    ok(await ws_system.client.post("/v1/workspaces", json={"name": "ci"}, headers=stranger), 201)
    listed = ok(await ws_system.client.get("/v1/workspaces", headers=stranger))["workspaces"]
    assert [w["name"] for w in listed] == ["ci"]
    pool_disks = ws_system.lxc_path.parent.parent / "pool" / "disks"
    assert len(list(pool_disks.iterdir())) == 3  # the refused ones made no disk


async def test_other_accounts_workspaces_are_not_found(ws_system: System) -> None:
    mine = ok(await ws_system.client.post("/v1/workspaces", json={"name": "private"}), 201)
    snapshot = ok(await ws_system.client.post("/v1/workspaces/private/snapshots", json={}), 201)
    stranger = {"Authorization": f"Bearer {await ws_system.new_key('intruder@test.invalid')}"}
    for selector in ("private", mine["id"]):
        for method, path, body in [
            ("GET", f"/v1/workspaces/{selector}", None),
            ("PATCH", f"/v1/workspaces/{selector}", {"is_template": True}),
            ("DELETE", f"/v1/workspaces/{selector}", None),
            ("POST", f"/v1/workspaces/{selector}/snapshots", {}),
            ("GET", f"/v1/workspaces/{selector}/snapshots", None),
            ("POST", f"/v1/workspaces/{selector}/snapshots/{snapshot['id']}/restore", None),
            ("DELETE", f"/v1/workspaces/{selector}/snapshots/{snapshot['id']}", None),
            ("POST", f"/v1/workspaces/{selector}/clone", {"name": "stolen"}),
            ("POST", "/v1/sessions", {"workspace": selector}),
            ("POST", "/v1/exec", {"workspace": selector, "command": "cat /workspace/*"}),
        ]:
            response = await ws_system.client.request(method, path, json=body, headers=stranger)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "workspace_not_found"
    assert ok(await ws_system.client.get("/v1/workspaces/private"))["is_template"] is False
    assert len(ok(await ws_system.client.get("/v1/workspaces/private/snapshots"))["snapshots"]) == 1


async def test_scopes(ws_system: System) -> None:
    reader = {"Authorization": f"Bearer {await ws_system.new_key('r@test.invalid', scopes=['workspaces.read'])}"}
    writer = {"Authorization": f"Bearer {await ws_system.new_key('w@test.invalid', scopes=['workspaces.write'])}"}
    refused = await ws_system.client.post("/v1/workspaces", json={"name": "x"}, headers=reader)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "missing_scope"
    assert (await ws_system.client.get("/v1/workspaces", headers=reader)).status_code == 200
    ok(await ws_system.client.post("/v1/workspaces", json={"name": "x"}, headers=writer), 201)
    assert (await ws_system.client.get("/v1/workspaces", headers=writer)).status_code == 403
    assert (await ws_system.client.delete("/v1/workspaces/x", headers=writer)).status_code == 204


async def test_delete_while_attached(ws_system: System) -> None:
    workspace = ok(await ws_system.client.post("/v1/workspaces", json={"name": "busy"}), 201)
    session = ok(await ws_system.client.post("/v1/sessions", json={"workspace": "busy"}), 201)
    refused = await ws_system.client.delete("/v1/workspaces/busy")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "workspace_in_use" and session["id"] in refused.json()["error"]["message"]
    assert ok(await ws_system.client.get("/v1/workspaces/busy"))["status"] == "ready"
    assert ok(await ws_system.client.get(f"/v1/sessions/{session['id']}"))["status"] == "running"

    assert (await ws_system.client.delete("/v1/workspaces/busy", params={"force": "true"})).status_code == 204
    ended = ok(await ws_system.client.get(f"/v1/sessions/{session['id']}"))
    assert ended["status"] == "terminated" and ended["status_reason"] == "its workspace was deleted"
    assert session["id"] not in ws_system.containers()
    assert not (ws_system.lxc_path.parent.parent / "pool" / "disks" / f"{workspace['id']}.img").exists()


BAD = [
    # (method, path, body, status, code)
    ("POST", "/v1/workspaces", {"name": NAME_64 + "x"}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": ""}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": "../etc"}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": "a/b"}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": "with space"}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": "-flag"}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": "ünïcode"}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": "12345678-1234-1234-1234-123456789abc"}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": 5}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": "ok", "extra": 1}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": "ok", "session_type": "vm"}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": "ok", "session_type": "browser", "image": "default"}, 422, "invalid_request"),
    ("POST", "/v1/workspaces", {"name": "ok", "image": "ghcr.io/example/dev:latest"}, 422, "unknown_image"),
    ("PATCH", "/v1/workspaces/nope", {"name": "x"}, 404, "workspace_not_found"),
    ("GET", "/v1/workspaces/nope", None, 404, "workspace_not_found"),
    ("GET", "/v1/workspaces/" + "x" * 300, None, 404, "workspace_not_found"),
    ("GET", "/v1/workspaces/%2e%2e", None, 404, "workspace_not_found"),
    ("GET", "/v1/workspaces/00000000-0000-0000-0000-000000000000", None, 404, "workspace_not_found"),
    ("DELETE", "/v1/workspaces/nope", None, 404, "workspace_not_found"),
    ("GET", "/v1/workspaces?limit=0", None, 422, "invalid_request"),
    ("GET", "/v1/workspaces?template=maybe", None, 422, "invalid_request"),
    ("GET", "/v1/workspaces?cursor=%%%", None, 422, "invalid_cursor"),
    ("GET", "/v1/workspaces?bogus=1", None, 422, "invalid_request"),
    ("POST", "/v1/sessions", {"workspace": "nope"}, 404, "workspace_not_found"),
    ("POST", "/v1/sessions", {"workspace": "x" * 65}, 422, "invalid_request"),
    ("POST", "/v1/exec", {"workspace": "nope", "command": "true"}, 404, "workspace_not_found"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD)
async def test_bad_input(
    ws_sqlite_system: System, method: str, path: str, body: object, status: int, code: str
) -> None:
    response = await ws_sqlite_system.client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert ok(await ws_sqlite_system.client.get("/v1/workspaces"))["workspaces"] == []


async def test_patch_needs_something_and_keeps_rules(ws_sqlite_system: System) -> None:
    ok(await ws_sqlite_system.client.post("/v1/workspaces", json={"name": "w"}), 201)
    for body in ({}, {"name": NAME_64 + "x"}, {"is_template": "yes"}, {"session_type": "browser"}):
        response = await ws_sqlite_system.client.patch("/v1/workspaces/w", json=body)
        assert response.status_code == 422, body


async def test_workspace_mutations_are_audited(ws_system: System) -> None:
    client = ws_system.client
    base = ok(await client.post("/v1/workspaces", json={"name": "audited"}), 201)
    ok(await client.patch("/v1/workspaces/audited", json={"is_template": True}))
    clone = ok(await client.post("/v1/workspaces/audited/clone", json={"name": "audited-copy"}), 201)
    snapshot = ok(await client.post("/v1/workspaces/audited/snapshots", json={}), 201)
    ok(await client.post(f"/v1/workspaces/audited/snapshots/{snapshot['id']}/restore"))
    assert (await client.delete(f"/v1/workspaces/audited/snapshots/{snapshot['id']}")).status_code == 204
    assert (await client.delete("/v1/workspaces/audited-copy")).status_code == 204
    events = ok(await client.get("/v1/audit", params={"limit": "100"}))["events"]
    by_action = {e["action"]: e for e in events if e["result"] == "success"}
    for action in ("workspace.create", "workspace.update", "workspace.clone", "workspace.delete"):
        assert by_action[action]["resource"]["type"] == "workspace", action
    for action in ("snapshot.create", "snapshot.restore", "snapshot.delete"):
        assert by_action[action]["resource"]["type"] == "snapshot", action
    assert by_action["snapshot.create"]["resource"]["id"] == snapshot["id"]
    created = [e["resource"]["id"] for e in events if e["action"] in ("workspace.create", "workspace.clone")]
    assert set(created) == {base["id"], clone["id"]}
