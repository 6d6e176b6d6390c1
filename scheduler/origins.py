"""Which web pages may open a WebSocket to a session endpoint: the ``Origin`` check.

Browsers send cookies (``chaser_token``) and let any page open a WebSocket
anywhere, so without a check a page on another site, or a preview served
from one session's port, could open a terminal with its visitor's
credentials. A browser always says which page is asking (``Origin``); so an
upgrade is refused unless its origin is the API's own (``public_url``), the
request's own host (a preview's page talking to itself), or one the operator
allows (``allowed_origins``). Programs that are not browsers send no
``Origin`` and are let through: they hold their credentials themselves.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from chaser.wire import errors


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, lower case, default ports dropped; None if it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def check_origin(origin: str | None, host: str | None, public_url: str, allowed: list[str]) -> None:
    """Refuse (403 ``origin_not_allowed``) a browser page of another site; a pure function."""
    if origin is None:
        return
    given = origin_of(origin)
    if given is not None:
        own = {origin_of(public_url), *(origin_of(a) for a in allowed)}
        if host:
            scheme = given.split("://", 1)[0]
            own.add(origin_of(f"{scheme}://{host}"))
        if given in own:
            return
    raise errors.Forbidden(f"WebSocket connections from {origin[:200]!r} are not allowed", code="origin_not_allowed")
