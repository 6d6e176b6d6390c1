"""The seeds' session endpoints, against a real scheduler, agent and LXC."""

from __future__ import annotations

import uuid
from pathlib import Path

import vmimages
from tests.conftest import System, wait_until


async def test_create_exec_terminate(system: System) -> None:
    created = await system.client.post("/v1/sessions", json={"session_type": "sandbox", "ephemeral": True})
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["status"] == "running"
    assert session["image"] == "default"
    assert session["active_connection_leases"] == 0
    assert session["endpoints"]["path"] == f"{system.api_url}/s/{session['id']}/"
    assert session["endpoints"]["subdomain"].startswith(f"http://{session['id']}.localhost:")
    assert session["id"] in system.containers()

    ran = await system.client.post(
        "/v1/exec",
        json={
            "session_id": session["id"],
            "command": "echo $GREETING from $(pwd); exit 7",
            "env": {"GREETING": "hi"},
            "cwd": "/tmp",
        },
    )
    assert ran.status_code == 200, ran.text
    assert ran.json()["exit_code"] == 7
    assert ran.json()["output"] == "hi from /tmp\n"

    fetched = await system.client.get(f"/v1/sessions/{session['id']}")
    assert fetched.json()["status"] == "running"

    deleted = await system.client.delete(f"/v1/sessions/{session['id']}")
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "terminated"
    assert deleted.json()["status_reason"] == "terminated by request"
    assert session["id"] not in system.containers()

    again = await system.client.delete(f"/v1/sessions/{session['id']}", params={"force": "true"})
    assert again.status_code == 200 and again.json()["status"] == "terminated"

    after = await system.client.post("/v1/exec", json={"session_id": session["id"], "command": "true"})
    assert after.status_code == 409
    assert after.json()["error"]["code"] == "session_not_running"


async def test_sessions_do_not_share_a_filesystem(system: System, images_dir: Path) -> None:
    a = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
    b = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
    write = await system.client.post("/v1/exec", json={"session_id": a["id"], "command": "echo secret > /root/note"})
    assert write.json()["exit_code"] == 0
    read = await system.client.post("/v1/exec", json={"session_id": b["id"], "command": "cat /root/note"})
    assert read.json()["exit_code"] != 0
    # Writes land in the session's own layer, never in the shared image.
    image = vmimages.image_dir(images_dir, vmimages.resolve("default"))  # type: ignore[arg-type]
    assert not (image / "rootfs/root/note").exists()
    assert (system.lxc_path.parent / "disks" / a["id"] / "delta0/root/note").read_text() == "secret\n"
    for s in (a, b):
        await system.client.delete(f"/v1/sessions/{s['id']}")


async def test_list_is_paginated_newest_first(system: System) -> None:
    ids = []
    for _ in range(3):
        ids.append((await system.client.post("/v1/sessions", json={"ephemeral": True})).json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await system.client.get("/v1/sessions", params=params)).json()
        seen += [s["id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    running = (await system.client.get("/v1/sessions", params={"status": "running"})).json()["sessions"]
    assert {s["id"] for s in running} == set(ids)
    for session_id in ids:
        await system.client.delete(f"/v1/sessions/{session_id}")
    terminated = (await system.client.get("/v1/sessions", params={"status": "terminated"})).json()["sessions"]
    assert {s["id"] for s in terminated} == set(ids)


async def test_other_accounts_ids_are_not_found(system: System) -> None:
    mine = (await system.client.post("/v1/sessions", json={"ephemeral": True})).json()
    other_key = await system.new_key("intruder@test.invalid")
    headers = {"Authorization": f"Bearer {other_key}"}
    for method, path, body in [
        ("GET", f"/v1/sessions/{mine['id']}", None),
        ("DELETE", f"/v1/sessions/{mine['id']}", None),
        ("POST", "/v1/exec", {"session_id": mine["id"], "command": "id"}),
    ]:
        response = await system.client.request(method, path, json=body, headers=headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "session_not_found"
    listed = await system.client.get("/v1/sessions", headers=headers)
    assert listed.json()["sessions"] == []
    assert (await system.client.get(f"/v1/sessions/{mine['id']}")).json()["status"] == "running"
    await system.client.delete(f"/v1/sessions/{mine['id']}")


async def test_scopes_are_enforced(system: System) -> None:
    reader = await system.new_key("reader@test.invalid", scopes=["sessions.read"])
    headers = {"Authorization": f"Bearer {reader}"}
    assert (await system.client.get("/v1/sessions", headers=headers)).status_code == 200
    denied = await system.client.post("/v1/sessions", json={"ephemeral": True}, headers=headers)
    assert denied.status_code == 403
    assert "sessions.write" in denied.json()["error"]["message"]
    denied = await system.client.post("/v1/exec", json={"ephemeral": True, "command": "true"}, headers=headers)
    assert denied.status_code == 403 and "exec.write" in denied.json()["error"]["message"]


async def test_unknown_session_id(system: System) -> None:
    for path in (f"/v1/sessions/{uuid.uuid4()}", "/v1/sessions/not-a-uuid", "/v1/sessions/..%2F..%2Fetc"):
        response = await system.client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] in {"session_not_found", "not_found"}


async def test_terminate_while_creating_wins(system: System) -> None:
    """A delete that lands mid-create ends the session; the sandbox goes too."""
    import trio

    created: dict[str, str] = {}

    async def create() -> None:
        response = await system.client.post("/v1/sessions", json={"ephemeral": True})
        created.update(response.json())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(create)

        async def listed() -> bool:
            sessions = (await system.client.get("/v1/sessions")).json()["sessions"]
            return bool(sessions)

        await wait_until(listed)
        session_id = (await system.client.get("/v1/sessions")).json()["sessions"][0]["id"]
        await system.client.delete(f"/v1/sessions/{session_id}")
    final = (await system.client.get(f"/v1/sessions/{session_id}")).json()
    assert final.get("status") == "terminated", (final, created)

    async def gone() -> bool:
        return session_id not in system.containers()

    await wait_until(gone)
