"""Snapshots (take, list, restore, delete) and template clones, on a real XFS pool."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import System
from tests.workspace_support import exec_on, ok


def _pool(system: System) -> Path:
    return system.lxc_path.parent.parent / "pool"


async def _session(system: System, workspace: str) -> str:
    return str(ok(await system.client.post("/v1/sessions", json={"workspace": workspace}), 201)["id"])


async def _end(system: System, session_id: str) -> None:
    ok(await system.client.delete(f"/v1/sessions/{session_id}"))


async def test_snapshot_break_restore(ws_system: System) -> None:
    client = ws_system.client
    workspace = ok(await client.post("/v1/workspaces", json={"name": "proj"}), 201)
    setup = await exec_on(ws_system, {"workspace": "proj"}, "mkdir src && echo 'good' > src/main.c")
    assert setup["exit_code"] == 0
    snapshot = ok(await client.post("/v1/workspaces/proj/snapshots", json={"name": "before the break"}), 201)
    assert snapshot["workspace"] == workspace["id"] and snapshot["name"] == "before the break"
    assert snapshot["status"] == "ready" and snapshot["taken_while_attached"] is False
    assert (_pool(ws_system) / "snapshots" / workspace["id"] / f"{snapshot['id']}.img").exists()

    broken = await exec_on(ws_system, {"workspace": "proj"}, "rm -rf src && echo junk > junk")
    assert broken["exit_code"] == 0
    restored = ok(await client.post(f"/v1/workspaces/proj/snapshots/{snapshot['id']}/restore"))
    assert restored["id"] == workspace["id"]
    after = await exec_on(ws_system, {"workspace": "proj"}, "cat src/main.c; ls")
    assert after["output"] == "good\nsrc\n"

    listed = ok(await client.get("/v1/workspaces/proj/snapshots"))["snapshots"]
    assert [s["id"] for s in listed] == [snapshot["id"]]
    assert ok(await client.get(f"/v1/workspaces/proj/snapshots/{snapshot['id']}"))["id"] == snapshot["id"]
    assert (await client.delete(f"/v1/workspaces/proj/snapshots/{snapshot['id']}")).status_code == 204
    assert ok(await client.get("/v1/workspaces/proj/snapshots"))["snapshots"] == []
    assert not (_pool(ws_system) / "snapshots" / workspace["id"] / f"{snapshot['id']}.img").exists()
    gone = await client.post(f"/v1/workspaces/proj/snapshots/{snapshot['id']}/restore")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "snapshot_not_found"


async def test_snapshots_of_an_attached_workspace(ws_system: System) -> None:
    client = ws_system.client
    ok(await client.post("/v1/workspaces", json={"name": "live"}), 201)
    session = await _session(ws_system, "live")
    await exec_on(ws_system, {"session_id": session}, "echo one > data")

    refused = await client.post("/v1/workspaces/live/snapshots", json={})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "workspace_in_use"
    assert session in refused.json()["error"]["message"]
    assert ok(await client.get("/v1/workspaces/live/snapshots"))["snapshots"] == []

    # Forced: taken with the filesystem frozen, so the write just made is in it.
    forced = ok(await client.post("/v1/workspaces/live/snapshots", params={"force": "true"}, json={}), 201)
    assert forced["taken_while_attached"] is True
    write = await exec_on(ws_system, {"session_id": session}, "echo two > data && cat data")
    assert write["output"] == "two\n"  # thawed again

    refused = await client.post(f"/v1/workspaces/live/snapshots/{forced['id']}/restore")
    assert refused.status_code == 409 and session in refused.json()["error"]["message"]
    ok(await client.post(f"/v1/workspaces/live/snapshots/{forced['id']}/restore", params={"force": "true"}))
    ended = ok(await client.get(f"/v1/sessions/{session}"))
    assert ended["status"] == "terminated" and ended["status_reason"] == "forced to restore it"
    assert (await exec_on(ws_system, {"workspace": "live"}, "cat data"))["output"] == "one\n"


async def test_restore_of_another_workspaces_snapshot(ws_system: System) -> None:
    ok(await ws_system.client.post("/v1/workspaces", json={"name": "a"}), 201)
    ok(await ws_system.client.post("/v1/workspaces", json={"name": "b"}), 201)
    of_a = ok(await ws_system.client.post("/v1/workspaces/a/snapshots", json={}), 201)
    for method, path in [
        ("POST", f"/v1/workspaces/b/snapshots/{of_a['id']}/restore"),
        ("GET", f"/v1/workspaces/b/snapshots/{of_a['id']}"),
        ("DELETE", f"/v1/workspaces/b/snapshots/{of_a['id']}"),
        ("POST", "/v1/workspaces/b/snapshots/not-a-uuid/restore"),
    ]:
        response = await ws_system.client.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "snapshot_not_found"
    assert len(ok(await ws_system.client.get("/v1/workspaces/a/snapshots"))["snapshots"]) == 1


async def test_deleting_a_workspace_removes_its_snapshots(ws_sqlite_system: System) -> None:
    workspace = ok(await ws_sqlite_system.client.post("/v1/workspaces", json={"name": "gone"}), 201)
    for _ in range(2):
        ok(await ws_sqlite_system.client.post("/v1/workspaces/gone/snapshots", json={}), 201)
    assert len(list((_pool(ws_sqlite_system) / "snapshots" / workspace["id"]).iterdir())) == 2
    assert (await ws_sqlite_system.client.delete("/v1/workspaces/gone")).status_code == 204
    assert not (_pool(ws_sqlite_system) / "snapshots" / workspace["id"]).exists()
    assert list((_pool(ws_sqlite_system) / "disks").iterdir()) == []


def _used_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


async def test_templates_and_clones(ws_system: System) -> None:
    client = ws_system.client
    template = ok(await client.post("/v1/workspaces", json={"name": "node-base"}), 201)
    data = "dd if=/dev/zero of=blob bs=1M count=96 status=none && echo v1 > version"
    assert (await exec_on(ws_system, {"workspace": "node-base"}, data))["exit_code"] == 0

    refused = await client.post("/v1/workspaces/node-base/clone", json={"name": "copy"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_a_template"
    ok(await client.patch("/v1/workspaces/node-base", json={"is_template": True}))
    v1 = ok(await client.post("/v1/workspaces/node-base/snapshots", json={"name": "v1"}), 201)
    await exec_on(ws_system, {"workspace": "node-base"}, "echo v2 > version")

    used = _used_bytes(_pool(ws_system))
    clone = ok(await client.post("/v1/workspaces/node-base/clone", json={"name": "Feature-1"}), 201)
    # A reflink: the 96 MiB of data are shared, not copied.
    assert _used_bytes(_pool(ws_system)) - used < 16 << 20
    assert clone["cloned_from"] == {"workspace": template["id"], "snapshot": None}
    assert clone["is_template"] is False and clone["image"] == template["image"]
    from_snapshot = ok(
        await client.post("/v1/workspaces/node-base/clone", json={"name": "from-v1", "snapshot": v1["id"]}), 201
    )
    assert from_snapshot["cloned_from"] == {"workspace": template["id"], "snapshot": v1["id"]}

    assert (await exec_on(ws_system, {"workspace": "Feature-1"}, "cat version; echo mine > version"))[
        "output"
    ] == "v2\n"
    assert (await exec_on(ws_system, {"workspace": "from-v1"}, "cat version; du -m blob"))["output"] == "v1\n96\tblob\n"
    assert (await exec_on(ws_system, {"workspace": "node-base"}, "cat version"))["output"] == "v2\n"

    taken = await client.post("/v1/workspaces/node-base/clone", json={"name": "feature-1"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "workspace_name_taken"
    missing = await client.post("/v1/workspaces/node-base/clone", json={"name": "x", "snapshot": template["id"]})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "snapshot_not_found"
    assert len(list((_pool(ws_system) / "disks").iterdir())) == 3  # no orphan from the refused ones

    holder = await _session(ws_system, "node-base")
    busy = await client.post("/v1/workspaces/node-base/clone", json={"name": "hot"})
    assert busy.status_code == 409 and holder in busy.json()["error"]["message"]
    ok(await client.post("/v1/workspaces/node-base/clone", params={"force": "true"}, json={"name": "hot"}), 201)
    await _end(ws_system, holder)
