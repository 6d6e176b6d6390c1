"""``chaser accounts|keys|audit|webhooks`` as a shell user runs them, against a running system."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

from tests.tenancy.conftest import Tenants

CHASER = str(Path(sys.executable).parent / "chaser")


async def chaser(tenants: Tenants, *args: str, key: str | None = None, ok: bool = True) -> tuple[int, str, str]:
    env = {**os.environ, "CHASER_API_URL": tenants.system.api_url, "CHASER_API_KEY": key or tenants.system.api_key}
    env.pop("CHASER_ACCOUNT", None)
    done = await trio.run_process([CHASER, *args], env=env, capture_stdout=True, capture_stderr=True, check=False)
    out, err = done.stdout.decode(), done.stderr.decode()
    if ok:
        assert done.returncode == 0, (args, err)
    return done.returncode, out, err


async def as_json(tenants: Tenants, *args: str, key: str | None = None) -> Any:
    return json.loads((await chaser(tenants, *args, "--json", key=key))[1])


async def test_accounts_keys_webhooks_and_audit_from_the_shell(sqlite_tenants: Tenants) -> None:
    t = sqlite_tenants
    org = await as_json(t, "accounts", "create", "Acme Engineering", "--with-key", "first")
    org_key = org["key"]["secret"]
    listed = (await chaser(t, "accounts", "list", key=org_key))[1]
    assert listed.strip().startswith("*") and "Acme Engineering" in listed

    _, secret, _ = await chaser(
        t, "--account", "Acme Engineering", "keys", "create", "--name", "ci", "--scope", "sessions.read", key=org_key
    )
    secret = secret.strip()  # the secret alone on stdout
    assert secret.startswith("sk_")
    keys = (await chaser(t, "keys", "list", "--account", "Acme Engineering", key=org_key))[1]
    assert "ci" in keys and "[sessions.read]" in keys and secret not in keys
    # The key is bound: naming another account fails, and says why.
    code, _, err = await chaser(t, "--account", "personal", "keys", "list", key=org_key, ok=False)
    assert code == 1 and "key_bound_to_account" in err
    code, _, err = await chaser(t, "webhooks", "list", key=secret, ok=False)
    assert code == 1 and "webhooks.read" in err

    acme = "Acme Engineering"
    member = await as_json(t, "accounts", "members", "add", acme, "bob@test.invalid", "--role", "admin", key=org_key)
    assert member["role"] == "admin"
    await chaser(t, "accounts", "members", "set-role", acme, "bob@test.invalid", "member", key=org_key)
    bot = await as_json(t, "accounts", "service-accounts", "create", acme, "deploy-bot", key=org_key)
    bot_key = await as_json(t, "keys", "create", "--name", "deploy", "--service-account", "deploy-bot", key=org_key)
    assert bot_key["acts_as"]["id"] == bot["id"]

    hook = await as_json(t, "webhooks", "create", "http://127.0.0.1:9/x", "--event", "session.created", key=org_key)
    assert hook["secret"].startswith("whsec_")
    assert (await as_json(t, "webhooks", "ping", hook["id"], key=org_key))["event_type"] == "webhook.ping"
    updated = await as_json(t, "webhooks", "update", hook["id"], "--event", "job.failed", "--disable", key=org_key)
    assert updated["events"] == ["job.failed"] and updated["active"] is False
    assert hook["id"] in (await chaser(t, "webhooks", "list", key=org_key))[1]
    deliveries = await as_json(t, "webhooks", "deliveries", hook["id"], key=org_key)
    assert [d["event_type"] for d in deliveries["deliveries"]] == ["webhook.ping"]
    await chaser(t, "webhooks", "delete", hook["id"], key=org_key)

    ci_id = next(line.split()[0] for line in keys.splitlines() if "[sessions.read]" in line)
    assert (await as_json(t, "keys", "revoke", ci_id, key=org_key))["revoked_at"] is not None
    code, _, err = await chaser(t, "sessions", "list", key=secret, ok=False)
    assert code == 1 and "revoked" in err

    events = await as_json(t, "audit", key=org_key)
    actions = [e["action"] for e in events]
    for expected in ("key.create", "key.revoke", "member.add", "member.update", "webhook.create", "webhook.delete"):
        assert expected in actions
    assert actions[:2] == ["auth.failed", "key.revoke"]  # newest first: the revoked key refused
    only = await as_json(t, "audit", "--action", "webhook.ping", key=org_key)
    assert [e["action"] for e in only] == ["webhook.ping"]
    table = (await chaser(t, "audit", "--limit", "3", key=org_key))[1]
    assert len(table.splitlines()) == 3
