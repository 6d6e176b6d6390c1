"""Opaque cursors for keyset pagination: the sort key of the last row seen.

One codec for every list (sessions, jobs, workspaces, webhooks, audit), so a
cursor is read the same way, and refused the same way (422
``invalid_cursor``), wherever it is given back.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from chaser.wire import errors


def encode_cursor(*key: Any) -> str:
    """A cursor holding ``key``, the last row's sort key (JSON values)."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def decode_cursor(cursor: str, *types: Callable[[Any], Any]) -> tuple[Any, ...]:
    """The key ``encode_cursor`` wrote, each part converted by ``types``; 422 if it is not one.

    A converter refuses a part by raising ``ValueError`` or ``TypeError``.
    """
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(parts, list) or len(parts) != len(types):
            raise ValueError
        return tuple(kind(part) for kind, part in zip(types, parts, strict=True))
    except (ValueError, TypeError, binascii.Error):
        raise errors.InvalidInput("cursor is not one this API returned", code="invalid_cursor") from None
