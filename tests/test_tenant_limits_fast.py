"""The pure parts of the limits on tenants: Origin checks and session token claims."""

from __future__ import annotations

import pytest

from chaser import errors
from scheduler import session_tokens
from scheduler.origins import check_origin, origin_of
from scheduler.session_tokens import Claims

pytestmark = pytest.mark.fast

API = "https://api.example.com"


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (None, "api.example.com"),  # not a browser
        ("https://api.example.com", "api.example.com"),
        ("https://API.example.com:443", "x.sessions.example.com"),
        ("http://8000-abc.localhost:8420", "8000-abc.localhost:8420"),  # a preview talking to itself
        ("https://dash.example.com", "api.example.com"),  # allowed by the operator
    ],
)
def test_allowed_origins(origin: str | None, host: str) -> None:
    check_origin(origin, host, API, ["https://dash.example.com"])


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("https://evil.example", "api.example.com"),
        ("null", "api.example.com"),  # sandboxed frames, file://
        ("http://8000-abc.localhost:8420", "abc.localhost:8420"),  # a preview opening its session's terminal
        ("http://api.example.com", "other.example.com"),  # the API's host, but not its scheme
        ("garbage\x00", "api.example.com"),
    ],
)
def test_cross_site_origins_are_refused(origin: str, host: str) -> None:
    with pytest.raises(errors.Forbidden) as refused:
        check_origin(origin, host, API, ["https://dash.example.com"])
    assert refused.value.code == "origin_not_allowed"


def test_origin_normal_form() -> None:
    assert origin_of("wss://Example.COM:443/x?y") == "https://example.com"
    assert origin_of("http://[::1]:8080") == "http://[::1]:8080"
    assert origin_of("ftp://example.com") is None
    assert origin_of("http://example.com:99999") is None


def test_token_claims_round_trip_and_forgeries_fail() -> None:
    key = session_tokens.signing_key("k" * 43)
    claims = Claims("s", "a", frozenset({"files.read"}), 2e9, generation=3, key_id="kid", user_id=None)
    token = session_tokens.mint(key, claims)
    assert session_tokens.verify(key, token, 1e9) == claims
    with pytest.raises(errors.Unauthorized):
        session_tokens.verify(session_tokens.signing_key("j" * 43), token, 1e9)
    with pytest.raises(errors.Unauthorized) as expired:
        session_tokens.verify(key, token, 3e9)
    assert expired.value.code == "token_expired"
