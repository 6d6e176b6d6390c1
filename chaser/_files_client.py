"""The SDK's calls on a session's files, mixed into ``chaser.client.Client``.

They go through the session's path-style endpoints (``/s/<id>/files/...``)
and stream both ways: an upload takes any iterable of chunks (or a binary
file), a download hands back the response to read chunk by chunk, so no
file is ever held whole here either.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import quote

import httpx

from chaser.wire import errors

Content = Iterable[bytes] | IO[bytes]


def endpoint(session_id: str, rest: str) -> str:
    """The path of one of a session's endpoints; ``rest`` is quoted, so it cannot leave it."""
    return f"/s/{quote(session_id, safe='')}/{quote(rest, safe='/')}"


class FilesApi:
    _http: httpx.Client

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError  # provided by Client

    def stat(self, session_id: str, path: str) -> dict[str, Any]:
        """What ``path`` is in the session (``type``: file, directory, symlink, other); NotFound if nothing."""
        return self._request("GET", endpoint(session_id, f"fs/stat/{path.lstrip('/')}"))  # type: ignore[no-any-return]

    def upload(self, session_id: str, path: str, content: Content, *, parents: bool = False) -> dict[str, Any]:
        """Write ``content`` to ``path`` (replacing it whole once all has arrived)."""
        params = {"parents": "true"} if parents else {}
        target = endpoint(session_id, f"files/{path.lstrip('/')}")
        return self._request("PUT", target, content=content, params=params, timeout=None)  # type: ignore[no-any-return]

    def upload_tar(self, session_id: str, directory: str, tar_stream: Content) -> dict[str, Any]:
        """Extract a tar stream into ``directory`` (created if missing)."""
        target = endpoint(session_id, f"files/{directory.lstrip('/')}")
        return self._request(  # type: ignore[no-any-return]
            "PUT", target, content=tar_stream, params={"archive": "tar"}, timeout=None
        )

    @contextmanager
    def download(self, session_id: str, path: str, *, tar: bool = False) -> Iterator[httpx.Response]:
        """The response carrying ``path`` (a tar stream of it with ``tar``); read it with ``iter_bytes``."""
        params = {"archive": "tar"} if tar else {}
        target = endpoint(session_id, f"files/{path.lstrip('/')}")
        with self._http.stream("GET", target, params=params, timeout=None) as response:
            if response.is_error:
                response.read()
                try:
                    body = response.json()
                except ValueError:
                    body = None
                raise errors.from_response(response.status_code, body)
            yield response
