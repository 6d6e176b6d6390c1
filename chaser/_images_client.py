"""The SDK's registry image calls, mixed into ``chaser.client.Client``.

Pulls ahead of time and their progress, the images the hosts hold, their
removal, and the account's registry logins (a password goes in the body,
never in a URL).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote


class ImagesApi:
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError  # provided by Client

    def pull_image(self, reference: str) -> dict[str, Any]:
        """Start pulling ``reference`` onto a host; the pull, to follow with ``get_image_pull``."""
        return self._request("POST", "/v1/images", json={"reference": reference})  # type: ignore[no-any-return]

    def get_image_pull(self, pull_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/images/{quote(pull_id, safe='')}")  # type: ignore[no-any-return]

    def wait_image_pull(
        self,
        pull_id: str,
        *,
        interval: float = 0.3,
        timeout: float = 3600.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the pull has ended; ``on_update`` sees each state."""
        deadline = time.monotonic() + timeout
        while True:
            pull = self.get_image_pull(pull_id)
            if on_update is not None:
                on_update(pull)
            if pull["status"] != "pulling" or time.monotonic() > deadline:
                return pull
            time.sleep(interval)

    def list_images(self) -> dict[str, Any]:
        return self._request("GET", "/v1/images")  # type: ignore[no-any-return]

    def delete_image(self, digest: str) -> None:
        self._request("DELETE", f"/v1/images/{quote(digest, safe=':')}")

    def add_registry_credential(self, registry: str, username: str, password: str) -> dict[str, Any]:
        body = {"registry": registry, "username": username, "password": password}
        return self._request("POST", "/v1/registry-credentials", json=body)  # type: ignore[no-any-return]

    def list_registry_credentials(self) -> dict[str, Any]:
        return self._request("GET", "/v1/registry-credentials")  # type: ignore[no-any-return]

    def delete_registry_credential(self, credential_id: str) -> None:
        self._request("DELETE", f"/v1/registry-credentials/{quote(credential_id, safe='')}")
