"""The scheduler's configuration: ``/etc/chaser/scheduler.toml``, then ``CHASER_SCHEDULER_*``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from chaser._config import FileAndEnvSettings

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
    # Shared secret between the scheduler and its agents.
    token: SecretStr
    # A key created for the first user at start, if not there yet.
    bootstrap_api_key: SecretStr | None = None
    bootstrap_email: str = "admin@localhost"
    create_timeout: float = Field(default=60.0, gt=0)
    # An agent silent this long is not placed on; twice this long, its
    # sessions are declared lost.
    heartbeat_timeout: float = Field(default=10.0, gt=0)
    reconcile_interval: float = Field(default=2.0, gt=0)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    # Session lifetime: the maximum (timeout_ms) and the idle timeout
    # (idle_timeout_ms) a session gets when its create does not say.
    default_session_timeout_ms: int = Field(default=3_600_000, gt=0)
    max_session_timeout_ms: int = Field(default=86_400_000, gt=0)
    default_idle_timeout_ms: int = Field(default=600_000, gt=0)
