"""``POST /v1/workspaces/import`` and re-bootstrap, against a local Git host (real git over HTTP).

The Git host lives in a test-made outside world, the agent's uplink: a
clone runs inside a throwaway sandbox, which can reach nothing else.
"""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import trio

from agent.sandboxes.gitimport import GitSource, Remote, git_environment
from agent.storage import mounts
from tests.conftest import System, wait_until
from tests.gitserver import GitHost, git_host
from tests.workspace_support import exec_on, ok, start_workspace_system, stop_workspace_system

TOKEN = "ghp_TestTokenThatMustNeverLeak0123456789"


@pytest.fixture
async def git_system(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, database_url: str, pool: Path, git_server: GitHost
) -> AsyncIterator[System]:
    """The system importing from the local Git host, over SQLite and PostgreSQL."""
    system = await start_workspace_system(nursery, tmp_path, images_dir, database_url, pool, git=git_server)
    try:
        yield system
    finally:
        await stop_workspace_system(system, pool)


@pytest.fixture
async def git_sqlite_system(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, pool: Path, git_server: GitHost
) -> AsyncIterator[System]:
    system = await start_workspace_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", pool, git=git_server
    )
    try:
        yield system
    finally:
        await stop_workspace_system(system, pool)


def _nothing_made(system: System) -> None:
    pool = system.lxc_path.parent.parent / "pool"
    assert list((pool / "disks").iterdir()) == []
    assert list((pool / "staging").iterdir()) == []
    assert mounts.mounts_under(system.lxc_path.parent / "mounts") == []  # workspace mounts


async def test_import_public_repository(git_system: System, git_server: GitHost) -> None:
    git_server.create("acme/app", {"README.md": "hello\n", "src/main.py": "print('hi')\n"})
    workspace = ok(await git_system.client.post("/v1/workspaces/import", json={"repository": "acme/app"}), 201)
    assert workspace["name"] == "app" and workspace["status"] == "ready"
    url = f"{git_server.url}/acme/app.git"
    assert workspace["source"] == {"repository": "acme/app", "ref": None, "url": url}
    check = "cat README.md; ls -A; git log --format=%s; git remote get-url origin; git status --short"
    ran = await exec_on(git_system, {"workspace": "app"}, check)
    assert ran["output"] == f"hello\n.git\nREADME.md\nsrc\ninitial\n{url}\n", ran


async def test_import_by_url_and_ref(git_system: System, git_server: GitHost) -> None:
    first = git_server.create("acme/lib", {"version": "1\n"})
    git_server.commit("acme/lib", {"version": "2\n"}, "two")
    git_server.commit("acme/lib", {"version": "feature\n"}, "feature", branch="feature")
    cases = [
        ("latest", None, "2\n"),
        ("at-commit", first, "1\n"),
        ("at-branch", "feature", "feature\n"),
    ]
    for name, ref, expected in cases:
        body = {"repository": f"{git_server.url}/acme/lib", "name": name, **({"ref": ref} if ref else {})}
        workspace = ok(await git_system.client.post("/v1/workspaces/import", json=body), 201)
        assert workspace["source"]["repository"] == "acme/lib" and workspace["source"]["ref"] == ref
        assert (await exec_on(git_system, {"workspace": name}, "cat version"))["output"] == expected, name
    unknown = await git_system.client.post(
        "/v1/workspaces/import", json={"repository": "acme/lib", "ref": "no-such-branch", "name": "x"}
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "import_failed"
    assert "no-such-branch" in unknown.json()["error"]["message"]
    assert len(ok(await git_system.client.get("/v1/workspaces"))["workspaces"]) == 3


async def test_private_repository_token_never_leaks(
    git_system: System, git_server: GitHost, caplog: pytest.LogCaptureFixture
) -> None:
    git_server.create("acme/secret", {"plans.txt": "world domination\n"}, token=TOKEN)
    for body in (
        {"repository": "acme/secret"},
        {"repository": "acme/secret", "token": "ghp_wrong"},
    ):
        refused = await git_system.client.post("/v1/workspaces/import", json=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "import_failed"
        assert ok(await git_system.client.get("/v1/workspaces"))["workspaces"] == []
        _nothing_made(git_system)

    imported = await git_system.client.post("/v1/workspaces/import", json={"repository": "acme/secret", "token": TOKEN})
    ok(imported, 201)
    assert (await exec_on(git_system, {"workspace": "secret"}, "cat plans.txt"))["output"] == "world domination\n"
    assert any(TOKEN not in a and a.startswith("Basic ") for a in git_server.seen_auth)
    # Nowhere: not in the answer, the disk (the clone's .git included), the logs, the database.
    assert TOKEN not in imported.text
    grep = await exec_on(git_system, {"workspace": "secret"}, f"grep -rl {TOKEN} /workspace; echo done")
    assert grep["output"] == "done\n"
    assert TOKEN not in caplog.text
    assert TOKEN not in await _database_text(git_system)


async def _database_text(system: System) -> str:
    def dump() -> str:
        store = system.store()
        try:
            with store.engine.connect() as conn:
                tables = sa.MetaData()
                tables.reflect(conn)
                return "\n".join(str(row) for t in tables.sorted_tables for row in conn.execute(sa.select(t)))
        finally:
            store.close()

    return await trio.to_thread.run_sync(dump)


async def test_rebootstrap_reclones_onto_a_fresh_disk(git_system: System, git_server: GitHost) -> None:
    git_server.create("acme/svc", {"app.txt": "v1\n"}, token=TOKEN)
    ok(await git_system.client.post("/v1/workspaces/import", json={"repository": "acme/svc", "token": TOKEN}), 201)
    await exec_on(git_system, {"workspace": "svc"}, "echo scratch > local.txt && echo edited > app.txt")
    git_server.commit("acme/svc", {"app.txt": "v2\n"}, "v2")

    refused = await git_system.client.post("/v1/workspaces/svc/bootstrap", json={})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "import_failed"
    kept = await exec_on(git_system, {"workspace": "svc"}, "cat app.txt local.txt")
    assert kept["output"] == "edited\nscratch\n"  # a failed re-import leaves the disk as it was

    holder = ok(await git_system.client.post("/v1/sessions", json={"workspace": "svc"}), 201)
    busy = await git_system.client.post("/v1/workspaces/svc/bootstrap", json={"token": TOKEN})
    assert busy.status_code == 409 and holder["id"] in busy.json()["error"]["message"]
    ok(await git_system.client.post("/v1/workspaces/svc/bootstrap", params={"force": "true"}, json={"token": TOKEN}))
    assert ok(await git_system.client.get(f"/v1/sessions/{holder['id']}"))["status"] == "terminated"
    fresh = await exec_on(git_system, {"workspace": "svc"}, "cat app.txt; ls; git log --format=%s")
    assert fresh["output"] == "v2\napp.txt\nv2\ninitial\n"

    ok(await git_system.client.post("/v1/workspaces", json={"name": "plain"}), 201)
    plain = await git_system.client.post("/v1/workspaces/plain/bootstrap", json={})
    assert plain.status_code == 409 and plain.json()["error"]["code"] == "not_imported"


BAD_IMPORTS = [
    ({"repository": "https://github.com/acme/app"}, 422, "invalid_repository"),
    ({"repository": "http://127.0.0.2:1/acme/app"}, 422, "invalid_repository"),
    ({"repository": "acme"}, 422, "invalid_repository"),
    ({"repository": "acme/app/tree/main"}, 422, "invalid_repository"),
    ({"repository": "acme/.."}, 422, "invalid_repository"),
    ({"repository": "../acme/app"}, 422, "invalid_repository"),
    ({"repository": "file:///etc/passwd"}, 422, "invalid_repository"),
    ({"repository": "ext::sh -c touch% /tmp/pwned"}, 422, "invalid_repository"),
    ({"repository": "acme/app", "ref": "--upload-pack=touch /tmp/pwned"}, 422, "invalid_request"),
    ({"repository": "acme/app", "ref": "a..b"}, 422, "invalid_request"),
    ({"repository": "acme/app", "token": "has space"}, 422, "invalid_request"),
    ({"repository": "acme/app", "token": "line\nbreak"}, 422, "invalid_request"),
    ({"repository": "acme/app", "name": "x" * 65}, 422, "invalid_request"),
    ({"repository": "acme/.github"}, 422, "invalid_name"),
    ({"repository": "acme/app", "session_type": "browser"}, 422, "invalid_request"),
    ({"repository": 5}, 422, "invalid_request"),
    ({"repository": "acme/missing"}, 422, "import_failed"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_IMPORTS)
async def test_bad_imports(git_sqlite_system: System, body: dict[str, object], status: int, code: str) -> None:
    response = await git_sqlite_system.client.post("/v1/workspaces/import", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert ok(await git_sqlite_system.client.get("/v1/workspaces"))["workspaces"] == []
    _nothing_made(git_sqlite_system)
    assert not Path("/tmp/pwned").exists()


async def test_name_taken_makes_no_disk(git_system: System, git_server: GitHost) -> None:
    git_server.create("acme/app", {"a": "1\n"})
    ok(await git_system.client.post("/v1/workspaces", json={"name": "App"}), 201)
    taken = await git_system.client.post("/v1/workspaces/import", json={"repository": "acme/app"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "workspace_name_taken"
    pool = git_system.lxc_path.parent.parent / "pool"
    assert len(list((pool / "disks").iterdir())) == 1


async def test_import_past_its_deadline_leaves_nothing(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, pool: Path, git_server: GitHost
) -> None:
    git_server.create("acme/slow", {"a": "1\n"})
    system = await start_workspace_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", pool,
        git=git_server, scheduler_overrides={"import_timeout": 5.0},  # the second import must fit in it on a busy host
    )  # fmt: skip
    try:
        git_server.stalled.set()
        response = await system.client.post("/v1/workspaces/import", json={"repository": "acme/slow"})
        assert response.status_code == 504, response.text
        assert ok(await system.client.get("/v1/workspaces"))["workspaces"] == []
        git_server.stalled.clear()

        async def cleaned_up() -> bool:
            try:
                _nothing_made(system)
            except AssertionError:
                return False
            return "acme/slow" not in await _database_text(system)

        await wait_until(cleaned_up, timeout=60)
        # and the name is free again
        ok(await system.client.post("/v1/workspaces/import", json={"repository": "acme/slow"}), 201)
    finally:
        git_server.stalled.clear()
        await stop_workspace_system(system, pool)


# -- the boundary: the clone runs in a sandbox, not on the host -------------


async def _agent_post(system: System, path: str, body: dict[str, object]) -> httpx.Response:
    """A call to the agent's own API, as the scheduler makes it (with the host token)."""
    headers = {"Authorization": f"Bearer {system.token}"}
    async with httpx.AsyncClient(base_url=system.agent.url, headers=headers, timeout=60) as agent:
        return await agent.post(path, json=body)


@pytest.mark.parametrize("where", ["loopback", "loopback by name", "uplink address"])
async def test_a_repository_on_the_host_cannot_be_cloned(
    git_sqlite_system: System, git_server: GitHost, tmp_path: Path, where: str
) -> None:
    """The agent clones whatever URL it is given. A git client on the host (as it
    once was) reached the host's own services this way: its loopback (the
    database, the agent's API) and its addresses. From the clone's sandbox,
    127.0.0.1 is the sandbox's own, and the host is out of reach."""
    assert git_server.world is not None
    address = git_server.world.uplink_ip if where == "uplink address" else "127.0.0.1"
    listener = socket.create_server((address, 0))
    with git_host(tmp_path / "host-git", listener) as on_host:
        on_host.create("acme/app", {"secret.txt": "only for the host\n"})
        url = f"{on_host.url}/acme/app.git"
        if where == "loopback by name":
            url = url.replace("127.0.0.1", "localhost")
        body = {"id": str(uuid.uuid4()), "size_bytes": 1 << 30, "git": {"url": url}}
        response = await _agent_post(git_sqlite_system, "/v1/disks", body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "import_failed"
        assert on_host.seen_paths == []
    _nothing_made(git_sqlite_system)


def _processes_naming(marker: str) -> list[tuple[int, int, str]]:
    """(pid, real uid, network namespace) of every process whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if marker.encode() not in (entry / "cmdline").read_bytes():
                continue
            status = (entry / "status").read_text()
            uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
            found.append((int(entry.name), uid, os.readlink(entry / "ns" / "net")))
        except (OSError, ValueError):
            continue  # not a process, or gone meanwhile
    return found


async def test_the_clone_runs_in_a_sandbox_as_the_containers_range(
    git_sqlite_system: System, git_server: GitHost
) -> None:
    """Caught while it waits on a stalled Git host: every process of the clone
    runs as the containers' root (host uid 100000), in a network namespace
    that is not the host's; what it wrote is owned by that range."""
    repo = f"acme/app-{secrets.token_hex(4)}"  # names only this test's processes
    git_server.create(repo, {"a.txt": "1\n"})
    host_netns = os.readlink("/proc/self/ns/net")
    answers: list[httpx.Response] = []

    async def run_import() -> None:
        answers.append(await git_sqlite_system.client.post("/v1/workspaces/import", json={"repository": repo}))

    git_server.stalled.set()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_import)
            await wait_until(lambda: trio.to_thread.run_sync(lambda: bool(_processes_naming(repo))), timeout=60)
            cloning = await trio.to_thread.run_sync(_processes_naming, repo)
            git_server.stalled.clear()
    finally:
        git_server.stalled.clear()
    assert cloning and all(uid == 100_000 and netns != host_netns for _, uid, netns in cloning), cloning
    ok(answers[0], 201)
    owners = await exec_on(git_sqlite_system, {"workspace": repo.split("/")[1]}, "stat -c %u:%g . .git a.txt")
    assert owners["output"] == "0:0\n" * 3, owners


async def test_an_import_past_the_agents_deadline_leaves_no_sandbox(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, pool: Path, git_server: GitHost
) -> None:
    """Cut off by the agent's own deadline while git waits on the Git host: the
    sandbox, its processes, the disk's mount and the half-made disk all go."""
    repo = f"acme/slow-{secrets.token_hex(4)}"
    git_server.create(repo, {"a": "1\n"})
    system = await start_workspace_system(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", pool,
        git=git_server, agent_overrides={"import_timeout": 5.0},
    )  # fmt: skip
    try:
        git_server.stalled.set()
        body = {"id": str(uuid.uuid4()), "size_bytes": 1 << 30, "git": {"url": f"{git_server.url}/{repo}.git"}}
        response = await _agent_post(system, "/v1/disks", body)
        assert response.status_code == 504, response.text
        assert git_server.seen_paths  # it was cut off in the middle of the clone
        assert system.containers() == set() and system.leftovers() == set()
        assert await trio.to_thread.run_sync(_processes_naming, repo) == []
        _nothing_made(system)
    finally:
        git_server.stalled.clear()
        await stop_workspace_system(system, pool)


async def test_without_an_uplink_there_is_no_import(ws_sqlite_system: System) -> None:
    """A host whose sandboxes cannot get out cannot clone: the scheduler places
    imports elsewhere or says why, and such a host refuses one itself."""
    refused = await ws_sqlite_system.client.post("/v1/workspaces/import", json={"repository": "acme/app"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_egress", refused.text
    body = {"id": str(uuid.uuid4()), "size_bytes": 1 << 30, "git": {"url": "http://203.0.113.80/acme/app.git"}}
    response = await _agent_post(ws_sqlite_system, "/v1/disks", body)
    assert response.status_code == 503 and response.json()["error"]["code"] == "no_egress", response.text
    _nothing_made(ws_sqlite_system)


async def test_git_connects_to_the_addresses_the_agent_resolved(tmp_path: Path) -> None:
    """A sandbox has no resolver: the agent resolves the Git host's name and git
    is pinned to those addresses. Shown with the real git, on the host, against
    a name no resolver knows (``.invalid``) pinned to a loopback Git host."""
    with git_host(tmp_path / "git") as host:
        commit = host.create("acme/app", {"a": "1\n"})
        port = int(host.url.rsplit(":", 1)[1])
        source = GitSource(f"http://git.test.invalid:{port}/acme/app.git")
        remote = Remote("git.test.invalid", port, (IPv4Address("127.0.0.1"),), by_name=True)
        argv = ["git", "ls-remote", "--", source.url, "main"]
        listed = await trio.run_process(argv, env=git_environment(source, remote), capture_stdout=True)
        assert listed.stdout.decode().split() == [commit, "refs/heads/main"]
        assert host.seen_paths
