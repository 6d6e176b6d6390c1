"""The scheduler's configuration: ``/etc/chaser/scheduler.toml``, then ``CHASER_SCHEDULER_*``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from scheduler.jwt_tokens import ASYMMETRIC
from scheduler.quota_settings import QuotaSettings
from scheduler.rate_limits import RateLimitSettings
from serving.secret_strength import check_strong_secret
from serving.settings import FileAndEnvSettings

DEFAULT_CONFIG_FILE = Path("/etc/chaser/scheduler.toml")


class SchedulerConfig(FileAndEnvSettings):
    model_config = SettingsConfigDict(env_prefix="CHASER_SCHEDULER_", extra="forbid")

    # host:port to listen on; port 0 picks a free one (tests).
    bind: str = "127.0.0.1:8420"
    # Base URL clients use; session endpoints are built from it. Defaults
    # to the bound address.
    public_url: str | None = None
    # Sessions are also reachable at <session_id>.<session_domain>.
    session_domain: str = "localhost"
    database_url: str = "sqlite:////var/lib/chaser/scheduler/chaser.db"
    # Shared secret between the scheduler and its agents: 32 random bytes or
    # more (`openssl rand -hex 32`); a weaker one is refused at start.
    token: SecretStr

    @field_validator("token")
    @classmethod
    def _token_strong(cls, token: SecretStr) -> SecretStr:
        check_strong_secret("token", token.get_secret_value())
        return token

    # A key created for the first user at start, if not there yet.
    bootstrap_api_key: SecretStr | None = None
    bootstrap_email: str = "admin@localhost"
    create_timeout: float = Field(default=60.0, gt=0)
    # An agent silent this long is not placed on; twice this long, its
    # sessions are declared lost.
    heartbeat_timeout: float = Field(default=10.0, gt=0)
    reconcile_interval: float = Field(default=2.0, gt=0)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    # Anonymous authentication failures are audited once per source address
    # and window of this many seconds (the rest counted into one more row).
    audit_failure_window: float = Field(default=60.0, gt=0)
    # Session lifetime: the maximum (timeout_ms) and the idle timeout
    # (idle_timeout_ms) a session gets when its create does not say.
    default_session_timeout_ms: int = Field(default=3_600_000, gt=0)
    max_session_timeout_ms: int = Field(default=86_400_000, gt=0)
    default_idle_timeout_ms: int = Field(default=600_000, gt=0)
    # The longest a session access token may live (POST /v1/sessions/{id}/tokens).
    session_token_max_ttl: int = Field(default=3600, gt=0, le=86_400)
    # Keys session tokens are signed with (the first) and accepted with (all):
    # 32 random bytes or more each, never the cluster token. Empty: a key the
    # schedulers generate and keep in the store.
    session_token_keys: list[SecretStr] = Field(default_factory=list)

    @field_validator("session_token_keys")
    @classmethod
    def _token_keys_strong(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for index, key in enumerate(keys):
            check_strong_secret(f"session_token_keys[{index}]", key.get_secret_value())
        return keys

    # Origins (scheme://host[:port]) besides the API's own and the request's
    # whose pages may open WebSockets to session endpoints (a dashboard).
    allowed_origins: list[str] = Field(default_factory=list)
    # Per-account limits (sessions, vCPUs, memory, workspaces, queued jobs,
    # webhooks): everyone's defaults, and the most an account may raise its own to.
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    # Token buckets per credential and per source address (429 with Retry-After).
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    # Slow clients: a request's head must arrive within header_timeout of its
    # first byte, an API request's body within body_timeout; one address may
    # hold max_connections_per_address connections (0: no cap).
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    max_connections_per_address: int = Field(default=256, ge=0)

    # JWT access tokens (from an OAuth login elsewhere): accepted only when
    # an issuer, an audience and a JWKS (file or URL) are all configured.
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_url: str | None = None
    jwt_jwks_file: Path | None = None
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    jwt_leeway: float = Field(default=30.0, ge=0)
    # A token naming an unknown key id refetches the JWKS (key rotation), at
    # most this often; the JWKS is refetched anyway once this old.
    jwt_jwks_refetch_interval: float = Field(default=10.0, gt=0)
    jwt_jwks_max_age: float = Field(default=300.0, gt=0)
    # The claim that names the user's email. A new subject is linked by it to
    # the user with that email (or one is made) only when the issuer is
    # trusted to verify emails and the token says ``email_verified: true``;
    # never to a user who already holds a key or another identity.
    jwt_email_claim: str = "email"
    jwt_email_trusted: bool = False

    # Webhook deliveries: per-attempt timeout, retries with exponential
    # backoff (base * 2^(n-1), capped), and parallel sends per scheduler.
    webhook_timeout: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_retry_base: float = Field(default=10.0, gt=0)
    webhook_retry_max: float = Field(default=3600.0, gt=0)
    webhook_concurrency: int = Field(default=16, ge=1)
    # How often the outbox is checked besides being woken by new events
    # (other replicas' events, retries coming due).
    webhook_poll_interval: float = Field(default=2.0, gt=0)
    # Refuse deliveries to loopback, private, link-local and reserved
    # addresses, except to the ranges allowed here (an internal receiver).
    webhook_block_private_networks: bool = True
    webhook_allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)

    @model_validator(mode="after")
    def _token_keys_not_the_cluster_token(self) -> SchedulerConfig:
        if any(k.get_secret_value() == self.token.get_secret_value() for k in self.session_token_keys):
            raise ValueError("session_token_keys must not hold the cluster token: every agent host knows it")
        return self

    @model_validator(mode="after")
    def _jwt_complete(self) -> SchedulerConfig:
        jwt = [self.jwt_issuer, self.jwt_audience, self.jwt_jwks_url or self.jwt_jwks_file]
        if any(jwt) and not all(jwt):
            raise ValueError("JWT needs jwt_issuer, jwt_audience and one of jwt_jwks_url / jwt_jwks_file")
        if self.jwt_jwks_url and self.jwt_jwks_file:
            raise ValueError("give one of jwt_jwks_url and jwt_jwks_file, not both")
        if not set(self.jwt_algorithms) <= ASYMMETRIC:
            raise ValueError(f"jwt_algorithms must be among {sorted(ASYMMETRIC)} (never 'none' or HMAC)")
        return self

    # Where workspace imports clone from: GitHub, a GitHub Enterprise, or any
    # smart-HTTP Git server. Repository URLs on other hosts are refused.
    git_base_url: str = "https://github.com"
    # A new workspace's disk; sparse, so only what is written takes room.
    workspace_disk_gb: int = Field(default=10, ge=1, le=16384)
    # Deadlines of disk operations on a host, and of a repository clone.
    workspace_op_timeout: float = Field(default=600.0, gt=0)
    import_timeout: float = Field(default=900.0, gt=0)

    # Jobs: how many this scheduler process runs at once, how many one
    # account may have running across all replicas, how often the queue is
    # polled (a job submitted here wakes it at once), how long a worker's
    # claim on a running job lasts unless renewed (a dead replica's jobs are
    # taken over after that), and how many attempts a job that never got to
    # start (host full, scheduler stopped) is given before it fails.
    job_concurrency: int = Field(default=16, ge=1)
    job_account_concurrency: int = Field(default=8, ge=1)
    job_poll_interval: float = Field(default=0.5, gt=0)
    job_lease_timeout: float = Field(default=20.0, gt=0)
    job_max_attempts: int = Field(default=5, ge=1)

    # Seals the registry logins accounts give (POST /v1/registry-credentials)
    # at rest: 32 random bytes or more (`openssl rand -hex 32`), kept apart from
    # the database. Unset, registry credentials are refused (503). To rotate
    # it, move the old key to the previous keys: logins sealed under it still
    # open, and are sealed anew under the new key when next used.
    registry_credentials_key: SecretStr | None = None
    registry_credentials_previous_keys: list[SecretStr] = Field(default_factory=list)

    @field_validator("registry_credentials_key")
    @classmethod
    def _credentials_key_strong(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            check_strong_secret("registry_credentials_key", key.get_secret_value())
        return key
