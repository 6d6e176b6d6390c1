"""A session token given in the path (``/s/<id>/t/st_.../...``) never reaches the audit trail."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
import trio

from scheduler.store.schema import audit_events
from tests.conftest import System
from tests.endpoints import new_session


async def test_path_tokens_are_redacted_in_the_audit_trail(sqlite_system: System) -> None:
    system = sqlite_system
    session_id = (await new_session(system))["id"]
    minted = await system.client.post(f"/v1/sessions/{session_id}/tokens", json={"scopes": ["files.write"]})
    token = minted.json()["token"]
    reader = (await system.client.post(f"/v1/sessions/{session_id}/tokens", json={"scopes": ["files.read"]})).json()
    async with httpx.AsyncClient(base_url=system.api_url, timeout=30) as anonymous:
        written = await anonymous.put(f"/s/{session_id}/t/{token}/files/root/x", content=b"x")
        assert written.status_code < 300, written.text
        refused = await anonymous.put(f"/s/{session_id}/t/{reader['token']}/files/root/y", content=b"y")
        assert refused.status_code == 403

    store = system.store()
    try:

        def paths() -> list[str]:
            query = sa.select(audit_events.c.path).where(audit_events.c.resource_id == session_id)
            with store.engine.connect() as conn:
                return [r.path for r in conn.execute(query)]

        recorded = await trio.to_thread.run_sync(paths)
    finally:
        store.close()
    assert f"/s/{session_id}/t/[token]/files/root/x" in recorded
    assert f"/s/{session_id}/t/[token]/files/root/y" in recorded
    assert not any("st_" in path for path in recorded), recorded
