"""The pure parts of webhooks, without sockets: the signature scheme and the retry schedule."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from chaser.webhook_signature import InvalidSignature, sign, verify
from scheduler.webhook_delivery import backoff

pytestmark = pytest.mark.fast

SECRET = "whsec_unit"
BODY = b'{"id":"e1","type":"session.created"}'


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    header = sign(SECRET, 1_700_000_000, BODY)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(SECRET, header, BODY, now=1_700_000_010) == 1_700_000_000


@pytest.mark.parametrize(
    ("secret", "header_ts", "body", "now"),
    [
        ("whsec_other", 1_700_000_000, BODY, 1_700_000_000),  # wrong secret
        (SECRET, 1_700_000_000, BODY + b" ", 1_700_000_000),  # body changed
        (SECRET, 1_700_000_000, BODY, 1_700_000_301),  # replayed too late
        (SECRET, 1_700_000_000, BODY, 1_699_999_000),  # from the future
    ],
)
def test_verification_refuses(secret: str, header_ts: int, body: bytes, now: float) -> None:
    with pytest.raises(InvalidSignature):
        verify(SECRET, sign(secret, header_ts, BODY), body, now=now)


@pytest.mark.parametrize("header", ["", "v1=abc", "t=x,v1=abc", "t=1700000000", "t=1700000000,v1="])
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(InvalidSignature):
        verify(SECRET, header, BODY, now=1_700_000_000)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 10, 3600, jitter=0) for n in range(1, 10)] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560]
    assert backoff(20, 10, 3600, jitter=0) == 3600
    delays = [backoff(3, 10, 3600) for _ in range(200)]
    assert min(delays) >= 36 and max(delays) <= 44 and len(set(delays)) > 1
