"""A sandbox's live connections as one thing to count and to end: leases and terminals."""

from __future__ import annotations

from agent.endpoints.pty import PtyHub
from agent.sandboxes.lease_keeper import LeaseKeeper


class SessionConnections:
    def __init__(self, keeper: LeaseKeeper, ptys: PtyHub) -> None:
        self.keeper = keeper
        self.ptys = ptys

    def count(self, sandbox_id: str) -> int:
        return self.keeper.count(sandbox_id)

    async def end(self, sandbox_id: str, reason: str) -> None:
        self.ptys.close_sandbox(sandbox_id)
        await self.keeper.drain(sandbox_id, reason)

    def forget(self, sandbox_id: str) -> None:
        self.keeper.forget(sandbox_id)

    def reopen(self, sandbox_id: str) -> None:
        self.keeper.undrain(sandbox_id)
