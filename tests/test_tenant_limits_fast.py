"""The pure parts of the limits on tenants: Origin checks, session token claims, quota
arithmetic, token buckets, connection counts."""

from __future__ import annotations

import secrets

import h11
import pytest

from chaser.wire import errors
from scheduler import session_tokens
from scheduler.config import SchedulerConfig
from scheduler.origins import check_origin, origin_of
from scheduler.quota_settings import QuotaLimits, QuotaSettings, Usage
from scheduler.quotas import check_ceiling, effective, refusal, reservation
from scheduler.rate_limits import Buckets, BucketSettings, RateLimiter, RateLimitSettings, TokenBucket, credential_of
from scheduler.session_tokens import Claims
from scheduler.token_keys import TokenKeys
from serving.front_limits import ConnectionCounts

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
    assert session_tokens.verify([key], token, 1e9) == claims
    with pytest.raises(errors.Unauthorized):
        session_tokens.verify([session_tokens.signing_key("j" * 43)], token, 1e9)
    with pytest.raises(errors.Unauthorized) as expired:
        session_tokens.verify([key], token, 3e9)
    assert expired.value.code == "token_expired"


def test_signing_keys_rotate() -> None:
    old, new = "o" * 22 + "ld-key-0123456789abcdefghij", "n" * 22 + "ew-key-0123456789abcdefghij"
    before = TokenKeys.of([old])
    during = TokenKeys.of([new, old])  # the new key signs, the old one's tokens still pass
    after = TokenKeys.of([new])
    claims = Claims("s", "a", frozenset({"files.read"}), 2e9)
    minted_before = session_tokens.mint(before.signing, claims)
    assert session_tokens.verify(during.accepted, minted_before, 1e9) == claims
    minted_during = session_tokens.mint(during.signing, claims)
    assert session_tokens.verify(after.accepted, minted_during, 1e9) == claims
    with pytest.raises(errors.Unauthorized):
        session_tokens.verify(after.accepted, minted_before, 1e9)


def test_session_token_keys_are_strong_and_not_the_cluster_token() -> None:
    cluster = secrets.token_urlsafe(32)
    with pytest.raises(ValueError, match="session_token_keys"):
        SchedulerConfig.load(None, token=cluster, session_token_keys=["change-me"])
    with pytest.raises(ValueError, match="cluster token"):
        SchedulerConfig.load(None, token=cluster, session_token_keys=[cluster])
    assert SchedulerConfig.load(None, token=cluster, session_token_keys=[secrets.token_urlsafe(32)])


def test_quota_arithmetic() -> None:
    settings = QuotaSettings()
    limits = effective(settings, QuotaLimits(sessions=2, cpus=1.5))
    assert limits.sessions == 2 and limits.cpus == 1.5 and limits.webhooks == settings.default.webhooks
    assert refusal(limits, Usage(sessions=1, cpus=1.0), Usage(sessions=1, cpus=0.5)) is None
    full = refusal(limits, Usage(sessions=2), Usage(sessions=1))
    assert full is not None and full.status == 429 and full.details["limit"] == "sessions"
    greedy = refusal(limits, Usage(sessions=0, cpus=1.0), Usage(sessions=1, cpus=1.0))
    assert greedy is not None and greedy.details == {"limit": "cpus", "max": 1.5, "used": 1.0, "requested": 1.0}
    # Only what an insert adds is checked: an account over one limit may still add what another counts.
    assert refusal(limits, Usage(sessions=9), Usage(webhooks=1)) is None
    assert refusal(effective(settings, QuotaLimits(webhooks=0)), Usage(), Usage(webhooks=1)) is not None
    # A limit the operator leaves out keeps its default; None (from code, not TOML) is no limit.
    partial = QuotaSettings.model_validate({"default": {"sessions": 3}})
    assert partial.default.sessions == 3 and partial.default.webhooks == QuotaSettings().default.webhooks
    unlimited = QuotaSettings.model_validate({"default": dict.fromkeys(QuotaLimits.model_fields)})
    assert refusal(effective(unlimited, QuotaLimits()), Usage(sessions=10**6), Usage(sessions=1)) is None


def test_quota_overrides_stay_under_the_ceiling() -> None:
    settings = QuotaSettings()
    check_ceiling(settings, QuotaLimits(sessions=settings.ceiling.sessions))
    with pytest.raises(errors.InvalidInput) as above:
        check_ceiling(settings, QuotaLimits(cpus=(settings.ceiling.cpus or 0) + 1))
    assert above.value.code == "quota_above_ceiling"


def test_a_session_reserves_its_limits_or_its_hosts_defaults() -> None:
    host = {"default": {"cpus": 2.0, "memory_mb": 2048}, "max": {}}
    assert reservation({"cpus": 0.5, "memory_mb": None}, host) == (0.5, 2048)
    assert reservation(None, host) == (2.0, 2048)
    assert reservation(None, None) == (1.0, 1024)


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)  # empty: one token comes in half a second
    assert bucket.take(100.5) == 0.0
    assert bucket.take(1000.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # refilled, never past the burst


def test_buckets_are_bounded_and_separate() -> None:
    buckets = Buckets(BucketSettings(rate=1, burst=1), max_buckets=2)
    assert buckets.take("a", 0.0) == 0.0 and buckets.take("a", 0.0) > 0
    assert buckets.take("b", 0.0) == 0.0
    buckets.take("c", 0.0)  # "a" is the least recently used: forgotten
    assert list(buckets.buckets) == ["b", "c"]


def test_a_requests_credential_is_found_wherever_it_rides() -> None:
    def request(target: str, *headers: tuple[str, str]) -> h11.Request:
        return h11.Request(method="GET", target=target, headers=[("Host", "x"), *headers])

    bearer = credential_of(request("/v1/sessions", ("Authorization", "Bearer sk_abc")))
    assert bearer is not None and "sk_abc" not in bearer
    assert credential_of(request("/s/x/files/a?chaser_token=st_1")) == credential_of(request("/s/x/t/st_1/json"))
    assert credential_of(request("/", ("Cookie", "a=b; chaser_token=st_1"))) == credential_of(
        request("/?chaser_token=st_1")
    )
    assert credential_of(request("/healthz")) is None


def test_connections_are_counted_per_address() -> None:
    counts = ConnectionCounts(cap=2)
    assert counts.admit("a") and counts.admit("a") and not counts.admit("a") and counts.admit("b")
    counts.release("a")
    assert counts.admit("a")
    for _ in range(2):
        counts.release("a")
    counts.release("b")
    assert counts.open == {}
    assert all(ConnectionCounts(cap=None).admit("a") for _ in range(1000))


def test_heartbeats_share_no_bucket() -> None:
    limiter = RateLimiter(RateLimitSettings(per_credential=BucketSettings(rate=1, burst=1)))

    def heartbeat() -> h11.Request:
        headers = [("Host", "x"), ("Authorization", "Bearer cluster-token")]
        return h11.Request(method="POST", target="/internal/v1/hosts/heartbeat", headers=headers)

    assert [limiter.wait_for(heartbeat(), f"10.0.0.{n}", 0.0) for n in range(5)] == [0.0] * 5
    api = h11.Request(method="GET", target="/v1/sessions", headers=[("Host", "x"), ("Authorization", "Bearer k")])
    assert limiter.wait_for(api, "10.0.0.1", 0.0) == 0.0 and limiter.wait_for(api, "10.0.0.2", 0.0) > 0
