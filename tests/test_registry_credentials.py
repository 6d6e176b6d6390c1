"""Per-account registry logins against a real registry with htpasswd auth on loopback.

Account A gives its login and runs its private image; account B, on the
same host whose store already holds that image, is refused until it shows
the registry a login of its own. The password is never in an answer, an
audit row, a log line or the database file, and no auth file outlives a pull.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from pydantic import ValidationError

from chaser.wire import errors
from scheduler.config import SchedulerConfig
from scheduler.credential_seal import Opened, SealBroken, Sealer
from scheduler.registry_credentials import CreateCredentialBody, RegistryLogin, RegistryLogins, registry_host
from scheduler.store import Store
from tests.conftest import System, start_system, stop_system
from tests.registry_support import BuiltImage, Entry, Registry, busybox_layer, running_registry

CHASER = str(Path(sys.executable).parent / "chaser")
USER = "ci-bot"
PASSWORD = "pw-" + secrets.token_hex(12)  # unique: any sighting of it is a leak


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[Registry]:
    htpasswd = tmp_path / "htpasswd"
    login = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True).stdout
    htpasswd.write_bytes(login)
    for registry in running_registry(tmp_path / "registry", htpasswd=htpasswd):
        registry.login = (USER, PASSWORD)
        yield registry


@pytest.mark.fast
def test_seals_open_only_with_their_key_and_for_what_they_were_sealed_for() -> None:
    sealer = Sealer(secrets.token_hex(32))
    sealed = sealer.seal(PASSWORD, "account-a\nghcr.io\nci-bot")
    assert PASSWORD not in sealed and sealed != sealer.seal(PASSWORD, "account-a\nghcr.io\nci-bot")
    assert sealer.open(sealed, "account-a\nghcr.io\nci-bot") == Opened(PASSWORD, by_previous_key=False)
    with pytest.raises(SealBroken):
        sealer.open(sealed, "account-b\nghcr.io\nci-bot")  # a row moved to another account
    with pytest.raises(SealBroken):
        Sealer(secrets.token_hex(32)).open(sealed, "account-a\nghcr.io\nci-bot")
    with pytest.raises(SealBroken):
        sealer.open("v1.!!!", "account-a\nghcr.io\nci-bot")
    assert PASSWORD not in repr(sealer) + repr(sealer.open(sealed, "account-a\nghcr.io\nci-bot"))


@pytest.mark.fast
def test_a_rotated_key_still_opens_what_it_sealed_until_it_is_dropped() -> None:
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    sealed = Sealer(old).seal(PASSWORD, "a\nr\nu")
    rotating = Sealer(new, previous=[old])
    assert rotating.open(sealed, "a\nr\nu") == Opened(PASSWORD, by_previous_key=True)
    resealed = rotating.seal(PASSWORD, "a\nr\nu")
    assert Sealer(new).open(resealed, "a\nr\nu") == Opened(PASSWORD, by_previous_key=False)
    with pytest.raises(SealBroken):
        Sealer(new).open(sealed, "a\nr\nu")


@pytest.mark.fast
def test_registry_hosts_are_read_as_references_name_them() -> None:
    assert registry_host("GHCR.io") == "ghcr.io"
    assert registry_host("127.0.0.1:5000") == "127.0.0.1:5000"
    assert registry_host("index.docker.io") == "docker.io"
    for bad in ("ghcr", "ghcr.io/org", "https://ghcr.io", "ghcr.io:port", "", "a b.io"):
        with pytest.raises(errors.InvalidInput, match="not a registry host"):
            registry_host(bad)


@pytest.mark.fast
def test_a_weak_sealing_key_is_refused_at_start() -> None:
    token = secrets.token_hex(32)
    with pytest.raises(ValidationError, match="registry_credentials_key"):
        SchedulerConfig.load(None, token=token, registry_credentials_key="change-me")
    assert SchedulerConfig.load(None, token=token).registry_credentials_key is None


async def create(client: httpx.AsyncClient, image: str) -> httpx.Response:
    return await client.post("/v1/sessions", json={"ephemeral": True, "image": image})


async def test_each_account_pulls_a_private_image_only_with_its_own_login(
    nursery: trio.Nursery,
    tmp_path: Path,
    images_dir: Path,
    private_registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    digest = await private_registry.push(
        BuiltImage([busybox_layer(Entry("secret-sauce", b"private\n"))]), "team/private:1", tmp_path
    )
    image = f"{private_registry.host}/team/private:1"
    database = tmp_path / "chaser.db"
    system: System = await start_system(
        nursery,
        tmp_path,
        images_dir,
        f"sqlite:///{database}",
        scheduler_overrides={"registry_credentials_key": secrets.token_hex(32)},
        agent_overrides={"registry": {"allowed": [private_registry.host], "tag_ttl": 0}},
    )
    try:
        a = system.client
        b_key = await system.new_key("b@test.invalid")
        b = httpx.AsyncClient(base_url=system.api_url, headers={"Authorization": f"Bearer {b_key}"}, timeout=60)
        # Without a login even A is refused, fast and by name.
        refused = await create(a, image)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "registry_auth_failed"

        # Bad bodies are clear 4xx answers that echo nothing back.
        for body in (
            {"registry": "not a host", "username": USER, "password": PASSWORD},
            {"registry": private_registry.host, "username": "a:b", "password": PASSWORD},
            {"registry": private_registry.host, "username": USER, "password": PASSWORD + "\n"},
            {"registry": private_registry.host, "username": USER},
            {"registry": private_registry.host, "username": USER, "password": PASSWORD, "extra": 1},
        ):
            bad = await a.post("/v1/registry-credentials", json=body)
            assert bad.status_code == 422, bad.text
            assert PASSWORD not in bad.text

        login = {"registry": private_registry.host, "username": USER, "password": PASSWORD}
        given = await a.post("/v1/registry-credentials", json=login)
        assert given.status_code == 201, given.text
        assert set(given.json()) == {"id", "registry", "username", "created_at"}
        again = await a.post("/v1/registry-credentials", json=login)
        assert again.status_code == 409 and again.json()["error"]["code"] == "registry_credential_exists"
        listed = await a.get("/v1/registry-credentials")
        assert listed.json()["registry_credentials"] == [given.json()]

        # A pulls and runs its private image.
        session = await create(a, image)
        assert session.status_code == 201, session.text
        assert session.json()["image_digest"] == digest
        ran = await a.post("/v1/exec", json={"session_id": session.json()["id"], "command": "cat /secret-sauce"})
        assert ran.json()["output"] == "private\n"

        # B sees none of A's logins, and the host's copy of A's image is not B's:
        # by tag or by digest, B must show the registry it may read it.
        assert (await b.get("/v1/registry-credentials")).json() == {"registry_credentials": []}
        assert (await b.delete(f"/v1/registry-credentials/{given.json()['id']}")).status_code == 404
        for name in (image, f"{private_registry.host}/team/private@{digest}"):
            denied = await create(b, name)
            assert denied.status_code == 403, denied.text
            assert denied.json()["error"]["code"] == "registry_auth_failed"
        wrong = {**login, "password": "not-" + PASSWORD}
        assert (await b.post("/v1/registry-credentials", json=wrong)).status_code == 201
        denied = await create(b, f"{private_registry.host}/team/private@{digest}")
        assert denied.json()["error"]["code"] == "registry_auth_failed", denied.text

        # With a login of its own that the registry takes (given with the CLI, the password
        # on stdin, never in argv), B runs it too, from the host's store.
        env = {**os.environ, "CHASER_API_URL": system.api_url, "CHASER_API_KEY": b_key}

        async def cli(*argv: str, stdin: bytes = b"") -> str:
            done = await trio.run_process([CHASER, "images", *argv], env=env, stdin=stdin, capture_stdout=True)
            assert PASSWORD not in done.stdout.decode()
            return str(done.stdout.decode())

        b_login = (await cli("logins")).split()
        assert b_login[1:3] == [private_registry.host, USER]
        await cli("logout", b_login[0])
        await cli("login", private_registry.host, "--username", USER, "--password-stdin", stdin=PASSWORD.encode())
        allowed = await create(b, f"{private_registry.host}/team/private@{digest}")
        assert allowed.status_code == 201, allowed.text

        # A takes its login back: its next pull is refused again.
        assert (await a.delete(f"/v1/registry-credentials/{given.json()['id']}")).status_code == 204
        assert (await a.delete(f"/v1/registry-credentials/{given.json()['id']}")).status_code == 404
        assert (await create(a, image)).json()["error"]["code"] == "registry_auth_failed"

        audit = await a.get("/v1/audit", params={"resource_type": "registry_credential", "limit": "500"})
        actions = [e["action"] for e in audit.json()["events"]]
        assert {"registry_credential.create", "registry_credential.delete"} <= set(actions), actions
        assert PASSWORD not in audit.text
        await b.aclose()
    finally:
        await stop_system(system)

    # Nowhere at rest or in the logs; no auth file left by any pull.
    for file in tmp_path.glob("chaser.db*"):  # the WAL too
        assert PASSWORD.encode() not in file.read_bytes(), file
    assert PASSWORD not in caplog.text
    skopeo_dir = tmp_path / "agent" / "image-store" / "skopeo"
    assert sorted(p.name for p in skopeo_dir.iterdir()) == ["home", "registries.conf"]
    # Nor anywhere in the host's state (records, image store), big sparse disk files aside.
    for file in (tmp_path / "agent").rglob("*"):
        if file.is_file() and not file.is_symlink() and file.stat().st_size < 16 << 20:
            assert PASSWORD.encode() not in file.read_bytes(), file


async def test_a_key_rotation_reseals_each_login_when_next_used(tmp_path: Path) -> None:
    token, old, new = (secrets.token_hex(32) for _ in range(3))
    store = Store(f"sqlite:///{tmp_path / 'db'}")
    try:
        store.migrate()
        _, account = store.ensure_user("rotating@test.invalid")
        body = CreateCredentialBody(registry="ghcr.io", username=USER, password=PASSWORD)

        def logins(key: str, *previous: str) -> RegistryLogins:
            config = SchedulerConfig.load(
                None, token=token, registry_credentials_key=key, registry_credentials_previous_keys=list(previous)
            )
            return RegistryLogins(store, config)

        await logins(old).create(account["id"], body)
        with pytest.raises(errors.Conflict) as lost:  # replaced without keeping the old key
            await logins(new).login_for(account["id"], "ghcr.io/org/app:1")
        assert lost.value.code == "registry_credential_unusable"
        assert await logins(new, old).login_for(account["id"], "ghcr.io/org/app:1") == RegistryLogin(USER, PASSWORD)
        # Sealed anew under the new key by that use: the old key can go.
        assert await logins(new).login_for(account["id"], "ghcr.io/org/app:1") == RegistryLogin(USER, PASSWORD)
        assert await logins(new).login_for(account["id"], "docker.io/library/node:20") is None
    finally:
        store.close()
