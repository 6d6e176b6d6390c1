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
    # Where workspace imports clone from: GitHub, a GitHub Enterprise, or any
    # smart-HTTP Git server. Repository URLs on other hosts are refused.
    git_base_url: str = "https://github.com"
    # A new workspace's disk; sparse, so only what is written takes room.
    workspace_disk_gb: int = Field(default=10, ge=1, le=16384)
    # Deadlines of disk operations on a host, and of a repository clone.
    workspace_op_timeout: float = Field(default=600.0, gt=0)
    import_timeout: float = Field(default=900.0, gt=0)
