"""Client of the agents' API, one pooled HTTP client for all hosts."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx

from chaser import errors


class AgentClient:
    def __init__(self, token: str) -> None:
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_keepalive_connections=64),
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

    async def create_sandbox(self, host_url: str, sandbox_id: str, image: str, timeout: float) -> Any:
        return await self._call(
            "POST", f"{host_url}/v1/sandboxes", json={"id": sandbox_id, "image": image}, timeout=timeout
        )

    async def destroy_sandbox(self, host_url: str, sandbox_id: str, *, force: bool = True) -> None:
        """Destroy; a sandbox the host does not know counts as destroyed.

        Without ``force`` the host refuses (409 ``active_connections``)
        while connections to the sandbox are open.
        """
        with contextlib.suppress(errors.NotFound):
            await self._call("DELETE", f"{host_url}/v1/sandboxes/{sandbox_id}?force={str(force).lower()}")

    async def sandbox(self, host_url: str, sandbox_id: str, timeout: float) -> Any:
        return await self._call("GET", f"{host_url}/v1/sandboxes/{sandbox_id}", timeout=timeout)

    async def exec(self, host_url: str, sandbox_id: str, body: dict[str, Any], timeout: float) -> Any:
        return await self._call("POST", f"{host_url}/v1/sandboxes/{sandbox_id}/exec", json=body, timeout=timeout)
