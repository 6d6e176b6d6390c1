"""Rate limits on the API and the session endpoints: token buckets per credential and per address.

Every request the scheduler's front receives takes a token from the
bucket of its source address and, if it carries one, of its credential
(the bearer value or session token, kept only as a hash); an empty bucket
answers 429 ``rate_limited`` with ``Retry-After`` before anything else is
done, so a flood costs no database work and no audit rows. Buckets refill
continuously (``rate`` a second, up to ``burst``); the defaults are
generous, meant to stop floods, not to shape honest clients. Agents'
heartbeats (``/internal/``) pay per address only: they all carry the one
cluster token. The tables
are bounded: the least recently used bucket goes first (a full bucket is
the same as none).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import h11
from pydantic import BaseModel, ConfigDict, Field

from chaser.wire import errors
from serving.front import Handler
from serving.relay import Downstream, header

TOKEN_PARAM = "chaser_token"
_PATH_TOKEN = re.compile(r"/t/(st_[^/?]+)")
# Buckets kept per table; past this the least recently used is dropped.
MAX_BUCKETS = 50_000


class BucketSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = Field(gt=0)  # tokens a second
    burst: int = Field(ge=1)  # the most a bucket holds


class RateLimitSettings(BaseModel):
    """``rate_limits``: per credential and per source address; either may be turned off (``enabled``)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    per_credential: BucketSettings = Field(default_factory=lambda: BucketSettings(rate=100, burst=1000))
    per_address: BucketSettings = Field(default_factory=lambda: BucketSettings(rate=200, burst=2000))


@dataclass
class TokenBucket:
    """A bucket of ``burst`` tokens refilled at ``rate`` a second; a pure value, time given."""

    rate: float
    burst: int
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def take(self, now: float) -> float:
        """Take one token: 0 if there was one, else the seconds until there will be."""
        if self.tokens < 0:
            self.tokens, self.updated = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + max(now - self.updated, 0.0) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Buckets:
    """One bucket per key, bounded: the least recently used is forgotten first."""

    def __init__(self, settings: BucketSettings, max_buckets: int = MAX_BUCKETS) -> None:
        self.settings = settings
        self.max_buckets = max_buckets
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.settings.rate, self.settings.burst)
            self.buckets[key] = bucket
            if len(self.buckets) > self.max_buckets:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(key)
        return bucket.take(now)


def credential_of(request: h11.Request) -> str | None:
    """A hash of the request's credential (bearer value, or session token in query, path or cookie)."""
    value: str | None = None
    authorization = (header(request, b"authorization") or b"").decode("latin-1")
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        value = given.strip()
    else:
        target = bytes(request.target).decode("latin-1")
        path, _, query = target.partition("?")
        if found := _PATH_TOKEN.search(path):
            value = found[1]
        else:
            value = next((v for k, v in parse_qsl(query, keep_blank_values=True) if k == TOKEN_PARAM), None)
        if value is None:
            cookie = (header(request, b"cookie") or b"").decode("latin-1")
            value = next(
                (c.split("=", 1)[1].strip() for c in cookie.split(";") if c.strip().startswith(f"{TOKEN_PARAM}=")),
                None,
            )
    return hashlib.sha256(value.encode()).hexdigest()[:32] if value else None


class RateLimiter:
    """A front route that refuses a request over its limits, and lets the rest through."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.settings = settings
        self.by_address = Buckets(settings.per_address)
        self.by_credential = Buckets(settings.per_credential)

    def wait_for(self, request: h11.Request, peer: str, now: float) -> float:
        """0 if the request may go on, else the seconds until it may (both buckets pay)."""
        wait = self.by_address.take(peer, now)
        # Every agent heartbeats with the one cluster token: it is no one client's credential.
        internal = bytes(request.target).startswith(b"/internal/")
        credential = None if internal else credential_of(request)
        if credential is not None:
            wait = max(wait, self.by_credential.take(credential, now))
        return wait

    async def route(self, request: h11.Request, peer: str) -> Handler | None:
        if not self.settings.enabled:
            return None
        wait = self.wait_for(request, peer, time.monotonic())
        if wait <= 0:
            return None
        seconds = max(1, math.ceil(wait))

        async def refuse(down: Downstream, request: h11.Request) -> None:
            error = errors.TooManyRequests(
                f"too many requests; retry after {seconds}s", code="rate_limited", details={"retry_after": seconds}
            )
            await down.send_error(error, [(b"retry-after", str(seconds).encode())])

        return refuse
