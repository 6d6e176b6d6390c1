"""The SDK's calls for accounts, members, service accounts, API keys, audit events and webhooks.

A mixin of ``chaser.client.Client``, kept apart so each feature's calls
live beside each other. Names in paths (accounts, members, service
accounts) are URL-quoted: "Acme Engineering" works as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

Json = dict[str, Any]


def _segment(value: str) -> str:
    return quote(value, safe="")


class AccountsMixin:
    _request: Callable[..., Any]  # defined by Client

    # -- accounts ---------------------------------------------------------------

    def list_accounts(self) -> Json:
        """The caller's accounts and ``active``, the one calls act on."""
        return self._request("GET", "/v1/accounts")  # type: ignore[no-any-return]

    def create_account(self, name: str, *, key_name: str | None = None, key_scopes: list[str] | None = None) -> Json:
        """Create an organization; with ``key_name``, also its first API key (its ``secret`` shown once)."""
        body: Json = {"name": name}
        if key_name is not None:
            body["key"] = {"name": key_name, **({"scopes": key_scopes} if key_scopes else {})}
        return self._request("POST", "/v1/accounts", json=body)  # type: ignore[no-any-return]

    def get_account(self, account: str) -> Json:
        return self._request("GET", f"/v1/accounts/{_segment(account)}")  # type: ignore[no-any-return]

    def rename_account(self, account: str, name: str) -> Json:
        return self._request("PATCH", f"/v1/accounts/{_segment(account)}", json={"name": name})  # type: ignore[no-any-return]

    def delete_account(self, account: str) -> None:
        self._request("DELETE", f"/v1/accounts/{_segment(account)}")

    # -- members and service accounts ---------------------------------------------

    def list_members(self, account: str) -> Json:
        return self._request("GET", f"/v1/accounts/{_segment(account)}/members")  # type: ignore[no-any-return]

    def add_member(self, account: str, email: str, role: str = "member") -> Json:
        path = f"/v1/accounts/{_segment(account)}/members"
        return self._request("POST", path, json={"email": email, "role": role})  # type: ignore[no-any-return]

    def set_member_role(self, account: str, member: str, role: str) -> Json:
        path = f"/v1/accounts/{_segment(account)}/members/{_segment(member)}"
        return self._request("PATCH", path, json={"role": role})  # type: ignore[no-any-return]

    def remove_member(self, account: str, member: str) -> None:
        self._request("DELETE", f"/v1/accounts/{_segment(account)}/members/{_segment(member)}")

    def list_service_accounts(self, account: str) -> Json:
        return self._request("GET", f"/v1/accounts/{_segment(account)}/service-accounts")  # type: ignore[no-any-return]

    def create_service_account(self, account: str, name: str, role: str = "member") -> Json:
        path = f"/v1/accounts/{_segment(account)}/service-accounts"
        return self._request("POST", path, json={"name": name, "role": role})  # type: ignore[no-any-return]

    def delete_service_account(self, account: str, service_account: str) -> None:
        self._request("DELETE", f"/v1/accounts/{_segment(account)}/service-accounts/{_segment(service_account)}")

    # -- API keys -----------------------------------------------------------------

    def create_key(self, name: str, *, scopes: list[str] | None = None, service_account: str | None = None) -> Json:
        """A key in the active account; its ``secret`` is in this response only."""
        body: Json = {"name": name}
        if scopes:
            body["scopes"] = scopes
        if service_account is not None:
            body["service_account"] = service_account
        return self._request("POST", "/v1/keys", json=body)  # type: ignore[no-any-return]

    def list_keys(self) -> Json:
        return self._request("GET", "/v1/keys")  # type: ignore[no-any-return]

    def get_key(self, key_id: str) -> Json:
        return self._request("GET", f"/v1/keys/{_segment(key_id)}")  # type: ignore[no-any-return]

    def revoke_key(self, key_id: str) -> Json:
        return self._request("DELETE", f"/v1/keys/{_segment(key_id)}")  # type: ignore[no-any-return]

    # -- audit events ---------------------------------------------------------------

    def list_audit(self, *, limit: int = 100, cursor: str | None = None, **filters: str | None) -> Json:
        """One page of events, newest first. Filters: action, actor, resource, resource_type, result, since, until."""
        params: Json = {"limit": limit, **{k: v for k, v in filters.items() if v is not None}}
        if cursor:
            params["cursor"] = cursor
        return self._request("GET", "/v1/audit", params=params)  # type: ignore[no-any-return]

    def iter_audit(self, **filters: str | None) -> Iterator[Json]:
        """Every matching event, following the cursor."""
        params: Json = {k: v for k, v in filters.items() if v is not None}
        while True:
            page = self._request("GET", "/v1/audit", params=params)
            yield from page["events"]
            if page["next_cursor"] is None:
                return
            params["cursor"] = page["next_cursor"]

    # -- webhooks -------------------------------------------------------------------

    def create_webhook(
        self, url: str, events: list[str], *, secret: str | None = None, description: str | None = None
    ) -> Json:
        """A webhook; its signing ``secret`` (given or generated) is in this response only."""
        body: Json = {"url": url, "events": events}
        if secret is not None:
            body["secret"] = secret
        if description is not None:
            body["description"] = description
        return self._request("POST", "/v1/webhooks", json=body)  # type: ignore[no-any-return]

    def list_webhooks(self) -> Json:
        return self._request("GET", "/v1/webhooks")  # type: ignore[no-any-return]

    def get_webhook(self, webhook_id: str) -> Json:
        return self._request("GET", f"/v1/webhooks/{_segment(webhook_id)}")  # type: ignore[no-any-return]

    def update_webhook(self, webhook_id: str, **changes: Any) -> Json:
        """Change any of url, events, secret, description, active."""
        return self._request("PATCH", f"/v1/webhooks/{_segment(webhook_id)}", json=changes)  # type: ignore[no-any-return]

    def delete_webhook(self, webhook_id: str) -> None:
        self._request("DELETE", f"/v1/webhooks/{_segment(webhook_id)}")

    def ping_webhook(self, webhook_id: str) -> Json:
        return self._request("POST", f"/v1/webhooks/{_segment(webhook_id)}/ping")  # type: ignore[no-any-return]

    def list_deliveries(
        self, webhook_id: str, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Json:
        params: Json = {
            "limit": limit,
            **({"status": status} if status else {}),
            **({"cursor": cursor} if cursor else {}),
        }
        path = f"/v1/webhooks/{_segment(webhook_id)}/deliveries"
        return self._request("GET", path, params=params)  # type: ignore[no-any-return]
