"""The SDK's workspace calls, mixed into ``chaser.client.Client``.

Kept apart so that each API area's calls live in their own module; the
mixin only needs the client's ``_request``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote


class WorkspacesApi:
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError  # provided by Client

    @staticmethod
    def _w(selector: str) -> str:
        """The path of a workspace; a selector cannot reach another route."""
        return f"/v1/workspaces/{quote(selector, safe='')}"

    @staticmethod
    def _force(force: bool) -> dict[str, str]:
        return {"force": "true"} if force else {}

    def create_workspace(self, name: str, *, session_type: str = "sandbox", image: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "session_type": session_type}
        if image is not None:
            body["image"] = image
        return self._request("POST", "/v1/workspaces", json=body)  # type: ignore[no-any-return]

    def list_workspaces(
        self, *, templates_only: bool = False, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if templates_only:
            params["template"] = "true"
        if cursor:
            params["cursor"] = cursor
        return self._request("GET", "/v1/workspaces", params=params)  # type: ignore[no-any-return]

    def get_workspace(self, selector: str) -> dict[str, Any]:
        return self._request("GET", self._w(selector))  # type: ignore[no-any-return]

    def update_workspace(
        self, selector: str, *, name: str | None = None, is_template: bool | None = None
    ) -> dict[str, Any]:
        body = {k: v for k, v in {"name": name, "is_template": is_template}.items() if v is not None}
        return self._request("PATCH", self._w(selector), json=body)  # type: ignore[no-any-return]

    def delete_workspace(self, selector: str, *, force: bool = False) -> None:
        self._request("DELETE", self._w(selector), params=self._force(force))

    def import_workspace(
        self,
        repository: str,
        *,
        ref: str | None = None,
        token: str | None = None,
        name: str | None = None,
        image: str | None = None,
    ) -> dict[str, Any]:
        optional = {"ref": ref, "token": token, "name": name, "image": image}
        body = {"repository": repository, **{k: v for k, v in optional.items() if v is not None}}
        return self._request("POST", "/v1/workspaces/import", json=body)  # type: ignore[no-any-return]

    def bootstrap_workspace(self, selector: str, *, token: str | None = None, force: bool = False) -> dict[str, Any]:
        body = {"token": token} if token is not None else {}
        return self._request(  # type: ignore[no-any-return]
            "POST", self._w(selector) + "/bootstrap", json=body, params=self._force(force)
        )

    def clone_workspace(
        self, template: str, name: str, *, snapshot: str | None = None, force: bool = False
    ) -> dict[str, Any]:
        body = {"name": name, **({"snapshot": snapshot} if snapshot else {})}
        return self._request(  # type: ignore[no-any-return]
            "POST", self._w(template) + "/clone", json=body, params=self._force(force)
        )

    def create_snapshot(self, selector: str, *, name: str | None = None, force: bool = False) -> dict[str, Any]:
        body = {"name": name} if name is not None else {}
        return self._request(  # type: ignore[no-any-return]
            "POST", self._w(selector) + "/snapshots", json=body, params=self._force(force)
        )

    def list_snapshots(self, selector: str) -> dict[str, Any]:
        return self._request("GET", self._w(selector) + "/snapshots")  # type: ignore[no-any-return]

    def restore_snapshot(self, selector: str, snapshot_id: str, *, force: bool = False) -> dict[str, Any]:
        return self._request(  # type: ignore[no-any-return]
            "POST", self._w(selector) + f"/snapshots/{quote(snapshot_id, safe='')}/restore", params=self._force(force)
        )

    def delete_snapshot(self, selector: str, snapshot_id: str) -> None:
        self._request("DELETE", self._w(selector) + f"/snapshots/{quote(snapshot_id, safe='')}")
