"""A flood of anonymous 401s writes a bounded number of audit rows, not one each.

Anonymous failures are counted per source address and window: the first is
written at once, the rest of the window as one row carrying their number.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import sqlalchemy as sa
import trio

from scheduler.store.schema import audit_events
from tests.conftest import wait_until
from tests.tenancy.conftest import Issuer, open_tenants

FLOOD = 60


async def test_an_anonymous_flood_writes_bounded_rows(
    nursery: trio.Nursery, tmp_path: Path, images_dir: Path, issuer: Issuer
) -> None:
    running, stack = await open_tenants(
        nursery, tmp_path, images_dir, f"sqlite:///{tmp_path / 'db'}", issuer, audit_failure_window=1.0
    )
    async with stack:
        store = running.system.store()
        sent = 0

        async def bad_request(client: httpx.AsyncClient) -> None:
            nonlocal sent
            headers = [{"Authorization": "Bearer sk_" + "x" * 40}, {}, {"Authorization": "Bearer a.b.c"}][sent % 3]
            assert (await client.get("/v1/sessions", headers=headers)).status_code == 401
            sent += 1

        def anonymous_rows() -> list[tuple[str | None, int]]:
            query = sa.select(audit_events.c.source_ip, audit_events.c.occurrences).where(
                audit_events.c.actor_type == "anonymous"
            )
            with store.engine.connect() as conn:
                return [(r.source_ip, r.occurrences or 1) for r in conn.execute(query)]

        try:
            async with httpx.AsyncClient(base_url=running.system.api_url) as client:
                for _ in range(FLOOD):
                    await bad_request(client)
                assert len(await trio.to_thread.run_sync(anonymous_rows)) <= 2

                async def counted() -> bool:
                    await bad_request(client)
                    rows = await trio.to_thread.run_sync(anonymous_rows)
                    return sum(n for _, n in rows) >= FLOOD

                await wait_until(counted)
            rows = await trio.to_thread.run_sync(anonymous_rows)
            assert len(rows) <= 4, rows
            assert {address for address, _ in rows} == {"127.0.0.1"}
            assert FLOOD <= sum(n for _, n in rows) <= sent
        finally:
            store.close()
