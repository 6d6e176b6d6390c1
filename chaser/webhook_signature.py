"""Signing and verifying Chaser webhook deliveries (the scheduler signs; receivers verify).

Each delivery carries::

    Chaser-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

The timestamp is part of what is signed, so a captured delivery cannot be
replayed later than the receiver's tolerance. Receivers verify with the raw
body bytes, before parsing them::

    from chaser.webhook_signature import verify
    verify(secret, request.headers["Chaser-Signature"], raw_body)  # raises InvalidSignature
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Chaser-Signature"
DEFAULT_TOLERANCE = 300.0


class InvalidSignature(Exception):
    """The delivery was not signed with this secret, or is too old."""


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Chaser-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance: float = DEFAULT_TOLERANCE, now: float | None = None
) -> int:
    """Check a ``Chaser-Signature`` header; return its timestamp or raise ``InvalidSignature``."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise InvalidSignature("no timestamp in the signature header") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature("the signature's timestamp is outside the tolerance")
    expected = _digest(secret, timestamp, body)
    # Any v1 value may match: room for two signatures while a secret changes.
    if not any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", [])):
        raise InvalidSignature("no v1 signature matches")
    return timestamp
