"""The store against SQLite and PostgreSQL: migrations, accounts, keys, sessions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from importlib.resources import files

import pytest
import sqlalchemy as sa
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from scheduler.auth import ensure_key, hash_secret, lookup_prefix, new_secret
from scheduler.core.session_states import SessionEvent
from scheduler.store import Store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def session_row(account_id: str, created_at: float, **overrides: object) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "account_id": account_id,
        "session_type": "sandbox",
        "ephemeral": True,
        "workspace_id": None,
        "image": "default",
        "host_id": "h1",
        "status": "creating",
        "status_reason": None,
        "created_at": created_at,
        "create_deadline": created_at + 60,
        "started_at": None,
        "terminated_at": None,
        **overrides,
    }


def test_migrate_is_idempotent(store: Store) -> None:
    """Migrating a migrated store changes nothing: same revision (the newest), same rows."""
    user, _ = store.ensure_user("m@test.invalid")
    store.migrate()
    with store.engine.connect() as conn:
        revisions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    config = AlembicConfig()
    config.set_main_option("script_location", str(files("scheduler") / "migrations"))
    assert revisions == [ScriptDirectory.from_config(config).get_current_head()]
    assert store.ensure_user("m@test.invalid")[0]["id"] == user["id"]


def test_users_get_one_personal_account(store: Store) -> None:
    user, account = store.ensure_user("a@test.invalid")
    again_user, again_account = store.ensure_user("a@test.invalid")
    assert (user["id"], account["id"]) == (again_user["id"], again_account["id"])
    assert account["kind"] == "personal"


def test_keys_are_stored_hashed(store: Store) -> None:
    secret = new_secret()
    ensure_key(store, "k@test.invalid", secret, "bootstrap")
    ensure_key(store, "k@test.invalid", secret, "bootstrap")  # idempotent
    row = store.api_key_by_prefix(lookup_prefix(secret))
    assert row is not None
    assert row["secret_hash"] == hash_secret(secret)
    assert secret not in str(row)
    with pytest.raises(ValueError):
        ensure_key(store, "k@test.invalid", "sk_short", "bad")


def test_sessions_are_scoped_and_paginated(store: Store) -> None:
    _, mine = store.ensure_user("me@test.invalid")
    _, theirs = store.ensure_user("them@test.invalid")
    now = time.time()
    rows = [session_row(mine["id"], now + i) for i in range(5)]
    for row in rows:
        store.insert_session(row)
    store.insert_session(session_row(theirs["id"], now))
    assert store.session(theirs["id"], str(rows[0]["id"])) is None
    page1 = store.list_sessions(mine["id"], status=None, limit=3, after=None)
    last = page1[-1]
    page2 = store.list_sessions(mine["id"], status=None, limit=3, after=(last["created_at"], last["id"]))
    assert [r["id"] for r in page1 + page2] == [r["id"] for r in reversed(rows)]


def test_transitions_are_guarded(store: Store) -> None:
    _, account = store.ensure_user("t@test.invalid")
    row = session_row(account["id"], time.time())
    store.insert_session(row)
    assert store.terminate(str(row["id"]), "by test")
    # A create finishing after the terminate must lose.
    assert not store.transition(str(row["id"]), SessionEvent.STARTED)
    assert not store.terminate(str(row["id"]), "twice")
    final = store.session(account["id"], str(row["id"]))
    assert final is not None and final["status"] == "terminated" and final["status_reason"] == "by test"


def test_load_counts_active_sessions_per_host(store: Store) -> None:
    _, account = store.ensure_user("l@test.invalid")
    info = {
        "host_id": "h1",
        "url": "http://127.0.0.1:1",
        "session_types": ["sandbox"],
        "images": ["default"],
        "capacity": {"max_sandboxes": 4, "cpus": 2, "memory_mb": 1024},
    }
    store.upsert_host(info)
    store.upsert_host({**info, "url": "http://127.0.0.1:2"})
    now = time.time()
    store.insert_session(session_row(account["id"], now))
    store.insert_session(session_row(account["id"], now, status="running"))
    store.insert_session(session_row(account["id"], now, status="terminated"))
    [host] = store.hosts_with_load()
    assert host["active"] == 2 and host["url"] == "http://127.0.0.1:2"
