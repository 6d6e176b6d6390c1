"""Bad input gets a JSON 4xx naming the problem: never a 500, never a traceback."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pydantic
import pytest

from agent.config import AgentConfig
from tests.conftest import System

CASES = [
    # (method, path, headers, body bytes, expected status, expected code)
    ("POST", "/v1/sessions", {"Content-Type": "application/json"}, b"{not json", 400, "invalid_json"),
    ("POST", "/v1/sessions", {"Content-Type": "application/json"}, b"\xff\xfe", 400, "invalid_json"),
    ("POST", "/v1/sessions", {"Content-Type": "application/json"}, b"[1, 2]", 422, "invalid_request"),
    ("POST", "/v1/sessions", {"Content-Type": "text/plain"}, b'{"ephemeral": true}', 415, "unsupported_media_type"),
    ("POST", "/v1/sessions", {"Content-Type": "application/json"}, b'{"ephemeral": "true"}', 422, "invalid_request"),
    (
        "POST",
        "/v1/sessions",
        {"Content-Type": "application/json"},
        b'{"ephemeral": true, "x": 1}',
        422,
        "invalid_request",
    ),
    ("POST", "/v1/sessions", {"Content-Type": "application/json"}, b'{"session_type": "vm"}', 422, "invalid_request"),
    ("POST", "/v1/sessions", {"Content-Type": "application/json"}, b"{}", 422, "invalid_request"),
    ("POST", "/v1/exec", {"Content-Type": "application/json"}, b'{"ephemeral": true}', 422, "invalid_request"),
    (
        "POST",
        "/v1/exec",
        {"Content-Type": "application/json"},
        b'{"ephemeral": true, "command": ""}',
        422,
        "invalid_request",
    ),
    (
        "POST",
        "/v1/exec",
        {"Content-Type": "application/json"},
        b'{"ephemeral": true, "command": 5}',
        422,
        "invalid_request",
    ),
    (
        "POST",
        "/v1/exec",
        {"Content-Type": "application/json"},
        b'{"ephemeral": true, "command": "x", "timeout_ms": -1}',
        422,
        "invalid_request",
    ),
    (
        "POST",
        "/v1/exec",
        {"Content-Type": "application/json"},
        b'{"ephemeral": true, "command": "x", "timeout_ms": 1e99}',
        422,
        "invalid_request",
    ),
    (
        "POST",
        "/v1/exec",
        {"Content-Type": "application/json"},
        b'{"ephemeral": true, "command": "x", "env": {"A": 1}}',
        422,
        "invalid_request",
    ),
    ("POST", "/v1/exec", {"Content-Type": "application/json"}, b'{"command": "x"}', 422, "invalid_request"),
    (
        "POST",
        "/v1/exec",
        {"Content-Type": "application/json"},
        b'{"session_id": "nope", "command": "x"}',
        404,
        "session_not_found",
    ),
    (
        "POST",
        "/v1/exec",
        {"Content-Type": "application/json"},
        b'{"workspace": "ci", "command": "x"}',
        404,
        "workspace_not_found",
    ),
    ("GET", "/v1/sessions?limit=0", {}, b"", 422, "invalid_request"),
    ("GET", "/v1/sessions?limit=abc", {}, b"", 422, "invalid_request"),
    ("GET", "/v1/sessions?status=zombie", {}, b"", 422, "invalid_request"),
    ("GET", "/v1/sessions?cursor=%%%", {}, b"", 422, "invalid_cursor"),
    ("GET", "/v1/sessions?bogus=1", {}, b"", 422, "invalid_request"),
    ("DELETE", "/v1/sessions/00000000-0000-0000-0000-000000000000?force=maybe", {}, b"", 422, "invalid_request"),
    ("GET", "/v1/nowhere", {}, b"", 404, "not_found"),
    ("PUT", "/v1/sessions", {}, b"", 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "code"), CASES)
async def test_bad_request(
    system: System, method: str, path: str, headers: dict[str, str], body: bytes, status: int, code: str
) -> None:
    response = await system.client.request(method, path, headers=headers, content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"ephemeral": True, "workspace": "w"}, "ephemeral session takes no workspace"),
        ({"session_type": "sandbox", "workspace": "w", "image": "default"}, "image is accepted only when ephemeral"),
        ({"session_type": "browser", "ephemeral": True, "image": "default"}, "browser sessions do not accept image"),
        ({"session_type": "sandbox"}, "workspace is required unless ephemeral"),
    ],
)
async def test_seed_session_rules(system: System, body: dict[str, object], fragment: str) -> None:
    response = await system.client.post("/v1/sessions", json=body)
    assert response.status_code == 422
    assert fragment in response.json()["error"]["message"]


async def test_unknown_image_is_named(system: System) -> None:
    response = await system.client.post("/v1/sessions", json={"ephemeral": True, "image": "ghcr.io/acme/none:1"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_image"
    assert "ghcr.io/acme/none:1" in error["message"] and "debian:bookworm" in error["message"]
    assert "node:20" in error["message"]  # the operator's aliases are offered too
    assert (await system.client.get("/v1/sessions")).json()["sessions"] == []


@pytest.mark.parametrize(
    "aliases",
    [
        {"node:20": "ghcr.io/acme/none:1"},
        {"debian:bookworm": "debian:bookworm"},
        {"default": "debian:bookworm"},
        {" ": "default"},
    ],
)
def test_image_alias_must_name_an_image_and_not_shadow_one(tmp_path: Path, aliases: dict[str, str]) -> None:
    with pytest.raises(pydantic.ValidationError, match="image alias"):
        AgentConfig.load(None, state_dir=tmp_path, token=secrets.token_hex(32), image_aliases=aliases)


async def test_workspace_that_names_nothing(system: System) -> None:
    response = await system.client.post("/v1/sessions", json={"workspace": "my-project"})
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "workspace_not_found", "message": "workspace 'my-project' not found"}


async def test_oversized_body(system: System) -> None:
    big = b'{"command": "' + b"x" * (2 << 20) + b'", "ephemeral": true}'
    response = await system.client.post("/v1/exec", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert system.containers() == set()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer sk_short",
        "Bearer sk_" + "A" * 40,
        "Bearer sk_" + "A" * 39 + "!",
        "Token abc",
    ],
)
async def test_bad_credentials(system: System, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient(base_url=system.api_url) as anonymous:
        response = await anonymous.get("/v1/sessions", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_revoked_key_is_refused_on_next_request(system: System) -> None:
    import time

    import trio

    from scheduler.store.schema import api_keys

    key = await system.new_key("leaver@test.invalid")
    headers = {"Authorization": f"Bearer {key}"}
    assert (await system.client.get("/v1/sessions", headers=headers)).status_code == 200

    def revoke() -> None:
        store = system.store()
        try:
            with store.engine.begin() as conn:
                conn.execute(api_keys.update().where(api_keys.c.name == "test").values(revoked_at=time.time()))
        finally:
            store.close()

    await trio.to_thread.run_sync(revoke)
    refused = await system.client.get("/v1/sessions", headers=headers)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]
