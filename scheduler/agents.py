"""Client of the agents' API, one pooled HTTP client for all hosts.

The sandbox calls send and read the wire's models (``chaser.wire.agent_api``),
the ones the agent validates with.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx

from chaser.wire import errors
from chaser.wire.agent_api import (
    CreateSandbox,
    DestroyQuery,
    ExecRequest,
    ExecResult,
    PauseQuery,
    SandboxInfo,
)


class AgentClient:
    def __init__(self, token: str) -> None:
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_keepalive_connections=64),
            trust_env=False,  # never route host-token traffic through an env proxy
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, url: str, *, json: Any = None, timeout: float | None = None) -> Any:
        try:
            response = await self._client.request(
                method, url, json=json, timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT
            )
        except httpx.TimeoutException:
            raise errors.Timeout("the host did not answer in time", code="host_timeout") from None
        except httpx.HTTPError as exc:
            raise errors.Unavailable(f"the host is unreachable: {exc}", code="host_unreachable") from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_error:
            raise errors.from_response(response.status_code, body)
        return body

    async def create_sandbox(self, host_url: str, request: CreateSandbox, timeout: float) -> SandboxInfo:
        """Create and start; with ``fork_from`` (a paused sandbox), from its snapshot instead of the image."""
        body = request.model_dump(mode="json", exclude_none=True)
        return SandboxInfo.model_validate(
            await self._call("POST", f"{host_url}/v1/sandboxes", json=body, timeout=timeout)
        )

    async def pause_sandbox(self, host_url: str, sandbox_id: str, timeout: float, *, force: bool) -> SandboxInfo:
        """Pause; without ``force`` the host refuses (409) while connections are open."""
        query = PauseQuery(force="true" if force else "false")
        url = f"{host_url}/v1/sandboxes/{sandbox_id}/pause?force={query.force}"
        return SandboxInfo.model_validate(await self._call("POST", url, timeout=timeout))

    async def resume_sandbox(self, host_url: str, sandbox_id: str, timeout: float) -> SandboxInfo:
        url = f"{host_url}/v1/sandboxes/{sandbox_id}/resume"
        return SandboxInfo.model_validate(await self._call("POST", url, timeout=timeout))

    async def destroy_sandbox(self, host_url: str, sandbox_id: str, *, force: bool = True) -> None:
        """Destroy; a sandbox the host does not know counts as destroyed.

        Without ``force`` the host refuses (409 ``active_connections``)
        while connections to the sandbox are open.
        """
        query = DestroyQuery(force="true" if force else "false")
        with contextlib.suppress(errors.NotFound):
            await self._call("DELETE", f"{host_url}/v1/sandboxes/{sandbox_id}?force={query.force}")

    async def sandbox(self, host_url: str, sandbox_id: str, timeout: float) -> SandboxInfo:
        url = f"{host_url}/v1/sandboxes/{sandbox_id}"
        return SandboxInfo.model_validate(await self._call("GET", url, timeout=timeout))

    async def exec(self, host_url: str, sandbox_id: str, request: ExecRequest, timeout: float) -> ExecResult:
        url = f"{host_url}/v1/sandboxes/{sandbox_id}/exec"
        return ExecResult.model_validate(
            await self._call("POST", url, json=request.model_dump(mode="json"), timeout=timeout)
        )

    # -- workspace disks (a git token in ``git`` is sent, never logged) -----

    async def create_disk(self, host_url: str, body: dict[str, Any], timeout: float) -> Any:
        """``body``: id, size_bytes, and a ``source`` (disk, snapshot, force) or ``git`` (url, ref, token)."""
        return await self._call("POST", f"{host_url}/v1/disks", json=body, timeout=timeout)

    async def delete_disk(self, host_url: str, disk_id: str, timeout: float) -> None:
        await self._call("DELETE", f"{host_url}/v1/disks/{disk_id}", timeout=timeout)

    async def reimport_disk(
        self, host_url: str, disk_id: str, size_bytes: int, git: dict[str, Any], timeout: float
    ) -> None:
        body = {"size_bytes": size_bytes, "git": git}
        await self._call("POST", f"{host_url}/v1/disks/{disk_id}/import", json=body, timeout=timeout)

    async def snapshot_disk(self, host_url: str, disk_id: str, snapshot_id: str, force: bool, timeout: float) -> bool:
        """Take a snapshot; True if the filesystem was frozen for it."""
        body = {"id": snapshot_id, "force": force}
        result = await self._call("POST", f"{host_url}/v1/disks/{disk_id}/snapshots", json=body, timeout=timeout)
        return bool(result["frozen"])

    async def delete_snapshot(self, host_url: str, disk_id: str, snapshot_id: str, timeout: float) -> None:
        await self._call("DELETE", f"{host_url}/v1/disks/{disk_id}/snapshots/{snapshot_id}", timeout=timeout)

    async def restore_disk(self, host_url: str, disk_id: str, snapshot_id: str, timeout: float) -> None:
        body = {"snapshot": snapshot_id}
        await self._call("POST", f"{host_url}/v1/disks/{disk_id}/restore", json=body, timeout=timeout)

    # -- browser work (jobs) ---------------------------------------------

    async def browser_actions(self, host_url: str, sandbox_id: str, body: dict[str, Any], timeout: float) -> Any:
        """Run CDP calls in the session's browser: ``results``, and ``error`` if a step failed."""
        url = f"{host_url}/v1/sandboxes/{sandbox_id}/browser/actions"
        return await self._call("POST", url, json=body, timeout=timeout)

    async def browser_scrape(self, host_url: str, sandbox_id: str, body: dict[str, Any], timeout: float) -> Any:
        """Load and extract a page in the session's browser: ``result``, or ``error``."""
        url = f"{host_url}/v1/sandboxes/{sandbox_id}/browser/scrape"
        return await self._call("POST", url, json=body, timeout=timeout)

    # -- detached execs (jobs) -------------------------------------------

    async def start_exec(self, host_url: str, sandbox_id: str, body: dict[str, Any], timeout: float) -> Any:
        """Start (or find, by ``body["id"]``) a command that outlives this request."""
        return await self._call("POST", f"{host_url}/v1/sandboxes/{sandbox_id}/execs", json=body, timeout=timeout)

    async def poll_exec(
        self, host_url: str, sandbox_id: str, exec_id: str, *, wait_ms: int, seen: int | None, timeout: float
    ) -> Any:
        query = f"wait_ms={wait_ms}" + (f"&seen={seen}" if seen is not None else "")
        return await self._call("GET", f"{host_url}/v1/sandboxes/{sandbox_id}/execs/{exec_id}?{query}", timeout=timeout)

    async def kill_exec(self, host_url: str, sandbox_id: str, exec_id: str) -> Any:
        return await self._call("POST", f"{host_url}/v1/sandboxes/{sandbox_id}/execs/{exec_id}/kill")

    async def forget_exec(self, host_url: str, sandbox_id: str, exec_id: str) -> None:
        with contextlib.suppress(errors.NotFound):
            await self._call("DELETE", f"{host_url}/v1/sandboxes/{sandbox_id}/execs/{exec_id}")

    # -- registry images (a login in ``body`` is sent, never logged) -------

    async def start_pull(self, host_url: str, body: dict[str, Any], timeout: float) -> Any:
        """Start pulling ``body["reference"]`` ahead of time (``id``, ``account``, ``registry_login``)."""
        return await self._call("POST", f"{host_url}/v1/images/pulls", json=body, timeout=timeout)

    async def pull(self, host_url: str, pull_id: str, timeout: float) -> Any:
        return await self._call("GET", f"{host_url}/v1/images/pulls/{pull_id}", timeout=timeout)

    async def images(self, host_url: str, timeout: float) -> Any:
        return await self._call("GET", f"{host_url}/v1/images", timeout=timeout)

    async def delete_image(self, host_url: str, digest: str, timeout: float) -> Any:
        return await self._call("DELETE", f"{host_url}/v1/images/{digest}", timeout=timeout)
