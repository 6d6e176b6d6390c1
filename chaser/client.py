"""Python SDK: a thin synchronous client of the public API.

Reads ``CHASER_API_URL``, ``CHASER_API_KEY`` and ``CHASER_ACCOUNT`` when not
given them, and raises the same error types the servers use
(``chaser.wire.errors``). ``account`` selects the active account for every call
(``X-Chaser-Account``: an account ID, its exact name, or ``personal``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from chaser._client_accounts import AccountsMixin
from chaser._files_client import FilesApi
from chaser._images_client import ImagesApi
from chaser._workspaces_client import WorkspacesApi
from chaser.wire import errors


class Client(AccountsMixin, WorkspacesApi, FilesApi, ImagesApi):
    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        account: str | None = None,
    ) -> None:
        api_url = api_url or os.environ.get("CHASER_API_URL")
        api_key = api_key or os.environ.get("CHASER_API_KEY")
        account = account or os.environ.get("CHASER_ACCOUNT")
        if not api_url or not api_key:
            raise ValueError('set CHASER_API_URL and CHASER_API_KEY (eval "$(chaser up --detach)" does)')
        headers = {"Authorization": f"Bearer {api_key}"}
        if account:
            headers["X-Chaser-Account"] = account
        # What a WebSocket to a session's endpoints needs too (``chaser.session_streams``).
        self.api_url = api_url.rstrip("/")
        self.headers = headers
        self._http = httpx.Client(base_url=self.api_url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        body = response.json() if response.content else None
        if response.is_error:
            raise errors.from_response(response.status_code, body)
        return body

    # -- sessions ---------------------------------------------------------

    def create_session(
        self,
        *,
        session_type: str = "sandbox",
        ephemeral: bool = False,
        workspace: str | None = None,
        image: str | None = None,
        isolation: dict[str, Any] | None = None,
        timeout_ms: int | None = None,
        idle_timeout_ms: int | None = None,
    ) -> dict[str, Any]:
        """``isolation`` may hold ``network``, ``egress_allow`` and ``limits``, as the API takes them."""
        body: dict[str, Any] = {"session_type": session_type, "ephemeral": ephemeral, **(isolation or {})}
        lifetime = {"timeout_ms": timeout_ms, "idle_timeout_ms": idle_timeout_ms}
        body.update({k: v for k, v in lifetime.items() if v is not None})
        if workspace is not None:
            body["workspace"] = workspace
        if image is not None:
            body["image"] = image
        return self._request("POST", "/v1/sessions", json=body)  # type: ignore[no-any-return]

    def list_sessions(self, *, status: str | None = None, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return self._request("GET", "/v1/sessions", params=params)  # type: ignore[no-any-return]

    def session_token(self, session_id: str, ttl_seconds: int | None = None, scopes: list[str] | None = None) -> str:
        """A short-lived token for the session's endpoints (``POST /v1/sessions/{id}/tokens``).

        Without ``scopes`` it carries ``sessions.write`` alone (ports, tunnels, CDP).
        """
        body: dict[str, Any] = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        if scopes is not None:
            body["scopes"] = scopes
        return str(self._request("POST", f"/v1/sessions/{session_id}/tokens", json=body)["token"])

    def revoke_session_tokens(self, session_id: str) -> None:
        """End every token of the session minted so far (``DELETE /v1/sessions/{id}/tokens``)."""
        self._request("DELETE", f"/v1/sessions/{session_id}/tokens")

    def quotas(self) -> dict[str, Any]:
        """The account's limits, usage, overrides and the operator's defaults and ceiling."""
        return self._request("GET", "/v1/quotas")  # type: ignore[no-any-return]

    def set_quotas(self, *, replace: bool = False, **limits: int | float | None) -> dict[str, Any]:
        """Change the account's own limits (``PATCH``; ``replace=True``: ``PUT``); None returns one to the default."""
        return self._request("PUT" if replace else "PATCH", "/v1/quotas", json=limits)  # type: ignore[no-any-return]

    def cdp_url(self, session_id: str, ttl_seconds: int | None = None) -> str:
        """A browser session's CDP WebSocket URL that needs nothing else to connect with.

        The session token rides in the URL's path (``/s/<id>/t/<token>/...``),
        so it survives clients that append paths to what they are given.
        """
        token = self.session_token(session_id, ttl_seconds)
        version = self._request("GET", f"/s/{session_id}/t/{token}/json/version")
        return str(version["webSocketDebuggerUrl"])

    def get_session(self, session_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/sessions/{session_id}")  # type: ignore[no-any-return]

    def extend_session(
        self, session_id: str, *, timeout_ms: int | None = None, idle_timeout_ms: int | None = None
    ) -> dict[str, Any]:
        """A new lifetime from now (``timeout_ms``) and/or idle timeout; the deadline sticks."""
        body = {k: v for k, v in {"timeout_ms": timeout_ms, "idle_timeout_ms": idle_timeout_ms}.items() if v}
        return self._request("PATCH", f"/v1/sessions/{session_id}", json=body)  # type: ignore[no-any-return]

    def terminate_session(self, session_id: str, *, force: bool = False) -> dict[str, Any]:
        params = {"force": "true"} if force else {}
        return self._request("DELETE", f"/v1/sessions/{session_id}", params=params)  # type: ignore[no-any-return]

    # -- exec -------------------------------------------------------------

    def exec(
        self,
        command: str | list[str],
        *,
        session_id: str | None = None,
        workspace: str | None = None,
        ephemeral: bool = False,
        image: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout_ms: int | None = None,
        isolation: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"command": command, **(isolation or {})}
        optional = {
            "session_id": session_id,
            "workspace": workspace,
            "image": image,
            "env": env,
            "cwd": cwd,
            "timeout_ms": timeout_ms,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if ephemeral:
            body["ephemeral"] = True
        timeout = self._http.timeout.read or 120.0
        if timeout_ms is not None:
            timeout = max(timeout, timeout_ms / 1000 + 60)
        return self._request("POST", "/v1/exec", json=body, timeout=timeout)  # type: ignore[no-any-return]

    # -- jobs -------------------------------------------------------------

    def create_job(
        self,
        kind: str,
        job_input: dict[str, Any],
        *,
        run_at: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "input": job_input}
        if run_at is not None:
            body["run_at"] = run_at
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return self._request("POST", "/v1/jobs", json=body)  # type: ignore[no-any-return]

    def list_jobs(
        self, *, kind: str | None = None, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        optional = {"kind": kind, "status": status, "cursor": cursor}
        params.update({k: v for k, v in optional.items() if v is not None})
        return self._request("GET", "/v1/jobs", params=params)  # type: ignore[no-any-return]

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def retry_job(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{job_id}/retry")  # type: ignore[no-any-return]

    def job_kinds(self) -> dict[str, Any]:
        return self._request("GET", "/v1/jobs/kinds")  # type: ignore[no-any-return]

    def wait_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.25,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job has succeeded, failed or been canceled; ``on_change`` sees each new state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = None
        while True:
            job = self.get_job(job_id)
            if (job["status"], job["attempt"]) != seen:
                seen = (job["status"], job["attempt"])
                if on_change is not None:
                    on_change(job)
            if job["status"] in ("succeeded", "failed", "canceled"):
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise errors.Timeout(f"job {job_id} is still {job['status']} after {timeout:g}s", code="wait_timeout")
            time.sleep(poll)
