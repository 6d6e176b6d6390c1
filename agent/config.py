"""The agent's configuration: ``/etc/chaser/agent.toml``, then ``CHASER_AGENT_*``."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

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
    # The runtimes this agent runs; each image says which one it needs
    # (debian:bookworm is a container, debian:bookworm-vm a microVM).
    runtimes: tuple[Literal["lxc", "qemu"], ...] = ("lxc", "qemu")
    qemu_binary: str = "qemu-system-x86_64"
    vm_memory_mb: int = Field(default=256, ge=64)
    vm_vcpus: int = Field(default=1, ge=1)
    # Start VM sessions from a snapshot of a booted guest of their image
    # (built in the background after the image's first cold boot).
    vm_warm_start: bool = True
    # Short paths for VM sockets (a unix socket path has at most 108 bytes)
    # and the cached accelerator probe; a tmpfs, so the probe reruns at boot.
    run_dir: Path = Path("/run/chaser")
    # Embedded mode tears everything down on exit; a host service keeps
    # sandboxes running across agent restarts and re-adopts them.
    destroy_on_shutdown: bool = False
