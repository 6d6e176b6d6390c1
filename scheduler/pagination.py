"""Opaque cursors for keyset pagination: the sort key of the last row seen."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from chaser import errors


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """The key ``encode_cursor`` wrote, each part converted to ``types``; 422 if it is not one."""
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(parts, list) or len(parts) != len(types):
            raise ValueError
        return tuple(kind(part) for kind, part in zip(types, parts, strict=True))
    except (ValueError, TypeError, binascii.Error):
        raise errors.InvalidInput("cursor is not one this API returned", code="invalid_cursor") from None
