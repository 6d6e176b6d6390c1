"""The agent's configuration: ``/etc/chaser/agent.toml``, then ``CHASER_AGENT_*``."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from chaser._config import FileAndEnvSettings

DEFAULT_CONFIG_FILE = Path("/etc/chaser/agent.toml")


class AgentConfig(FileAndEnvSettings):
    model_config = SettingsConfigDict(env_prefix="CHASER_AGENT_", extra="forbid")

    host_id: str = Field(default_factory=socket.gethostname)
    # host:port to listen on; port 0 picks a free one (tests).
    bind: str = "127.0.0.1:8421"
    # URL the scheduler uses to reach this agent; defaults to the bound address.
    advertise_url: str | None = None
    state_dir: Path = Path("/var/lib/chaser/agent")
    images_dir: Path = Path("/var/lib/chaser/images")
    # Where to register and heartbeat; None runs the agent unregistered.
    scheduler_url: str | None = None
    # Shared secret between the scheduler and its agents.
    token: SecretStr
    max_sandboxes: int = Field(default=64, ge=1)
    heartbeat_interval: float = Field(default=2.0, gt=0)
    start_timeout: float = Field(default=30.0, gt=0)
    exec_output_limit: int = Field(default=1 << 20, ge=1024)
    init_binary: Path = Path("/usr/bin/tini-static")
    # Session endpoints. A client must show a sign of life (any frame, a
    # ping) within the keepalive timeout, and real traffic (not just pings)
    # within the idle timeout, or its connection is closed and its lease ends.
    lease_keepalive_timeout: float = Field(default=60.0, gt=0)
    lease_idle_timeout: float = Field(default=3600.0, gt=0)
    # A client that reads no output for this long is disconnected.
    slow_client_timeout: float = Field(default=10.0, gt=0)
    pty_scrollback_bytes: int = Field(default=256 * 1024, ge=1024)
    pty_max_per_sandbox: int = Field(default=32, ge=1)
    pty_max_channels: int = Field(default=32, ge=1)
    # Embedded mode tears everything down on exit; a host service keeps
    # sandboxes running across agent restarts and re-adopts them.
    destroy_on_shutdown: bool = False
