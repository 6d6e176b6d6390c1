"""Which CDP session a call goes to: the browser, the job's page, or a named target."""

from __future__ import annotations

from agent.browser.cdp import CdpConnection


class Targets:
    """Attaches (flat sessions) on first use and remembers the session of each target."""

    def __init__(self, cdp: CdpConnection) -> None:
        self.cdp = cdp
        self._sessions: dict[str, str] = {}

    async def session_for(self, target: str) -> str | None:
        """``browser``: None (browser-level); ``page``: the job's page; else a target id."""
        if target == "browser":
            return None
        if target not in self._sessions:
            target_id = await self._first_page() if target == "page" else target
            attached = await self.cdp.call("Target.attachToTarget", {"targetId": target_id, "flatten": True})
            self._sessions[target] = str(attached["sessionId"])
        return self._sessions[target]

    async def new_page(self) -> str:
        """A new tab's session (closed with ``close_page``)."""
        created = await self.cdp.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.cdp.call("Target.attachToTarget", {"targetId": created["targetId"], "flatten": True})
        self._sessions[created["targetId"]] = str(attached["sessionId"])
        return str(created["targetId"])

    async def _first_page(self) -> str:
        found = await self.cdp.call("Target.getTargets")
        pages = [t["targetId"] for t in found["targetInfos"] if t["type"] == "page"]
        if pages:
            return str(pages[0])
        created = await self.cdp.call("Target.createTarget", {"url": "about:blank"})
        return str(created["targetId"])
