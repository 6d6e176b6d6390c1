"""Reaching a session's endpoints: session access tokens, and clear errors for what is not there."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import httpx
import trio

from tests.conftest import System
from tests.endpoints import new_session
from tests.test_endpoints_ports import start_servers


async def test_session_tokens(sqlite_system: System) -> None:
    system = sqlite_system
    session_id = (await new_session(system))["id"]
    other_id = (await new_session(system))["id"]
    minted = await system.client.post(
        f"/v1/sessions/{session_id}/tokens", json={"scopes": ["files.read", "sessions.write"], "ttl_seconds": 60}
    )
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]
    assert minted.json()["scopes"] == ["files.read", "sessions.write"]
    async with httpx.AsyncClient(base_url=system.api_url, timeout=30) as anonymous:
        hostname = f"/s/{session_id}/files/etc/hostname"
        assert (await anonymous.get(hostname, params={"chaser_token": token})).text == "sandbox\n"
        assert (await anonymous.get(hostname, cookies={"chaser_token": token})).status_code == 200
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await anonymous.get(hostname, headers=bearer)).status_code == 200
        write = await anonymous.put(f"/s/{session_id}/files/root/x", content=b"x", headers=bearer)
        assert write.status_code == 403 and write.json()["error"]["code"] == "missing_scope"
        elsewhere = await anonymous.get(f"/s/{other_id}/files/etc/hostname", headers=bearer)
        assert elsewhere.status_code == 403 and elsewhere.json()["error"]["code"] == "wrong_session"
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert (await anonymous.get(hostname, headers={"Authorization": f"Bearer {forged}"})).status_code == 401
        assert (await anonymous.get(hostname, headers={"Authorization": "Bearer st_garbage"})).status_code == 401
        # The token is ours: a forwarded port's program never sees it.
        await start_servers(system, session_id)
        seen = await anonymous.get(f"/s/{session_id}/ports/9000/x", params={"chaser_token": token, "q": "1"})
        assert seen.text.startswith("GET /x?q=1 HTTP/1.1") and token not in seen.text

        short = await system.client.post(f"/v1/sessions/{session_id}/tokens", json={"ttl_seconds": 1})
        await trio.sleep(1.5)
        expired = await anonymous.get(hostname, headers={"Authorization": f"Bearer {short.json()['token']}"})
        assert expired.status_code == 401 and expired.json()["error"]["code"] == "token_expired"

        # A key cannot mint more than it holds, nor for an ended session.
        made = await system.client.post("/v1/keys", json={"name": "minter", "scopes": ["sessions.write", "files.read"]})
        minter = {"Authorization": f"Bearer {made.json()['secret']}"}
        mint = f"/v1/sessions/{session_id}/tokens"
        too_much = await anonymous.post(mint, json={"scopes": ["files.write"]}, headers=minter)
        assert too_much.status_code == 403 and "files.write" in too_much.json()["error"]["message"]
        held = await anonymous.post(mint, json={}, headers=minter)  # by default: ports, tunnels and CDP only
        assert held.status_code == 201 and held.json()["scopes"] == ["sessions.write"]
        await system.client.delete(f"/v1/sessions/{other_id}")
        ended = await system.client.post(f"/v1/sessions/{other_id}/tokens", json={})
        assert ended.status_code == 409 and ended.json()["error"]["code"] == "session_not_running"
        for body in ({"ttl_seconds": 0}, {"ttl_seconds": 10**9}, {"scopes": ["keys.write"]}, {"nope": 1}):
            bad = await system.client.post(f"/v1/sessions/{session_id}/tokens", json=body)
            assert bad.status_code in (403, 422), (body, bad.text)
    await system.client.delete(f"/v1/sessions/{session_id}")


async def test_what_is_not_there_is_a_clear_json_error(sqlite_system: System) -> None:
    system = sqlite_system
    session_id = (await new_session(system))["id"]
    port = urlsplit(system.api_url).port
    nobody = str(uuid.uuid4())
    cases = [
        ("GET", f"/s/{nobody}/files/etc/hostname", {}, 404, "session_not_found"),
        ("GET", "/s/not-a-session/", {}, 404, "session_not_found"),
        ("GET", "/", {"Host": f"{nobody}.localhost:{port}"}, 404, "session_not_found"),
        ("GET", "/", {"Host": f"8000-{nobody}.localhost:{port}"}, 404, "session_not_found"),
        ("GET", f"/s/{session_id}/nothing-here", {}, 404, "not_found"),
        ("GET", f"/s/{session_id}/ports/70000/", {}, 422, "invalid_port"),
        ("GET", f"/s/{session_id}/ports/8999/", {}, 502, "port_not_listening"),
        ("GET", f"/s/{session_id}/files/root/../../../etc/shadow", {}, 404, None),
        ("POST", f"/s/{session_id}/fs/rename", {}, 400, "invalid_json"),
    ]
    async with httpx.AsyncClient(base_url=system.api_url, timeout=30) as anonymous:
        unauthenticated = await anonymous.get(f"/s/{session_id}/")
        assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["code"] == "unauthorized"
    for method, path, headers, status, code in cases:
        response = await system.client.request(method, path, headers=headers, content=b"{")
        where = f"{method} {path} {headers}: {response.status_code} {response.text}"
        assert response.status_code == status, where
        assert response.headers["content-type"] == "application/json", where
        if code is not None:
            assert response.json()["error"]["code"] == code, where
    await system.client.delete(f"/v1/sessions/{session_id}")
    ended = await system.client.get(f"/s/{session_id}/files/etc/hostname")
    assert ended.status_code == 409 and ended.json()["error"]["code"] == "session_not_running"
