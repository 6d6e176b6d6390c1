"""The agent's configuration: ``/etc/chaser/agent.toml``, then ``CHASER_AGENT_*``."""

from __future__ import annotations

import os
import socket
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

import vmimages
from agent.network.addressing import PREFIX_PATTERN
from agent.runtimes.qemu.jail import VmUids
from chaser.wire.isolation import Limits
from serving.secret_strength import check_strong_secret
from serving.settings import FileAndEnvSettings

DEFAULT_CONFIG_FILE = Path("/etc/chaser/agent.toml")


class NetworkConfig(BaseModel):
    """Sessions' networking (``[network]``; ``CHASER_AGENT_NETWORK__UPLINK=eth0``)."""

    model_config = ConfigDict(extra="forbid")
    # Every netns, veth and nftables table of this agent is named
    # <prefix>-<n> / <prefix>: two agents on one host need two prefixes.
    prefix: str = Field(default="chaser", pattern=PREFIX_PATTERN)
    # Sessions' addresses: one /30 per session. Must not overlap any other
    # network of the host.
    subnet: IPv4Network = IPv4Network("10.203.0.0/16")
    # The interface sessions' traffic leaves by, masqueraded. None (the
    # default) gives sessions no egress at all: sending them out of a
    # host's real uplink is a decision for its operator.
    uplink: str | None = None
    # Next hop on the uplink; by default the main table's gateway there.
    uplink_gateway: IPv4Address | None = None
    # Routing table of sessions' traffic; one per agent on a host.
    route_table: int = Field(default=2030, ge=1, lt=0xFFFFFFFF)
    # Destinations no session may reach, beyond the built-in ones
    # (0/8, 127/8, 169.254/16, multicast, 240/4 and the sessions' subnet):
    # e.g. the host's LAN, or the cluster's private networks.
    blocked: list[IPv4Network] = Field(default_factory=list)
    # Private and shared ranges (10/8, 172.16/12, 192.168/16, 100.64/10) are
    # blocked too, unless listed here: e.g. ["10.8.0.0/24"] for an internal
    # package mirror. The built-in ones above cannot be allowed.
    allowed: list[IPv4Network] = Field(default_factory=list)
    # Slots kept ready, and how long a released one rests before reuse.
    pool_size: int = Field(default=8, ge=0, le=1024)
    cooldown: float = Field(default=2.0, ge=0)


def host_memory_mb() -> int:
    """The host's physical memory in MiB: the default maximum of a sandbox's, and the heartbeat's capacity."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)


class LimitsConfig(BaseModel):
    """What a session gets when it asks for nothing (``[limits.default]``), and at most (``[limits.max]``)."""

    model_config = ConfigDict(extra="forbid")
    default: Limits = Limits(cpus=1.0, memory_mb=1024, pids=1024, disk_mb=4096)
    max: Limits = Field(
        default_factory=lambda: Limits(
            cpus=float(os.cpu_count() or 1), memory_mb=host_memory_mb(), pids=32768, disk_mb=65536
        )
    )


class RegistryHostConfig(BaseModel):
    """How to reach one registry (``[registry.hosts."ghcr.io"]``), as containerd's ``hosts.toml`` says it."""

    model_config = ConfigDict(extra="forbid")
    # Registries serving this one's images, tried in order before it:
    # "mirror.internal:5000" serves ghcr.io/org/app as mirror.internal:5000/org/app.
    mirrors: list[str] = Field(default_factory=list)
    # PEM file of the CAs this registry's (and its mirrors') certificates chain to.
    ca_file: Path | None = None


class WarmPoolConfig(BaseModel):
    """Containers started ahead of requests (``[warm_pool]``).

    A create of one of ``images`` with the host's default limits, no
    workspace, not a fork nor a browser, takes one of them instead of
    booting a container, and the agent starts another in the background.
    They count against ``max_sandboxes`` (a create that cannot use one makes
    room by discarding one), run nothing of a tenant's and have no egress
    until taken.
    """

    model_config = ConfigDict(extra="forbid")
    # Started containers kept per image; 0 turns the pool off.
    size: int = Field(default=2, ge=0, le=16)
    images: list[str] = Field(default_factory=lambda: ["debian:bookworm"])


class RegistryConfig(BaseModel):
    """Images from container registries (``[registry]``)."""

    model_config = ConfigDict(extra="forbid")
    # Registries sessions may name (host[:port], as in the reference), or
    # "*" for any. A registry on loopback is reached over plain HTTP too.
    allowed: list[str] = Field(default_factory=lambda: ["*"])
    hosts: dict[str, RegistryHostConfig] = Field(default_factory=dict)
    # The layer store; <state_dir>/image-store if unset.
    store_dir: Path | None = None
    # An image unpacking to more is refused with image_too_large.
    max_image_bytes: int = Field(default=16 << 30, ge=1 << 20)
    # Deadline of one pull (manifests and every layer), and of asking a
    # registry where a tag points.
    pull_timeout: float = Field(default=900.0, gt=0)
    resolve_timeout: float = Field(default=30.0, gt=0)
    # A tag resolved this recently is not asked again (0: ask every time).
    tag_ttl: float = Field(default=10.0, ge=0)
    # The layer store's size budget (unpacked layers and their kept blobs):
    # over it, images are removed by last use, least recent first, never
    # one a sandbox here runs. None: no budget (DELETE /v1/images only).
    store_budget_bytes: int | None = Field(default=None, ge=0)
    # How often the budget is checked (besides after each pull), and how
    # long after its last use an image is kept whatever the budget.
    gc_interval: float = Field(default=300.0, gt=0)
    gc_min_age: float = Field(default=600.0, ge=0)

    def allows(self, domain: str) -> bool:
        return "*" in self.allowed or domain in self.allowed


class AgentConfig(FileAndEnvSettings):
    model_config = SettingsConfigDict(env_prefix="CHASER_AGENT_", env_nested_delimiter="__", extra="forbid")

    host_id: str = Field(default_factory=socket.gethostname)
    # host:port to listen on; port 0 picks a free one (tests).
    bind: str = "127.0.0.1:8421"
    # URL the scheduler uses to reach this agent; defaults to the bound address.
    advertise_url: str | None = None
    state_dir: Path = Path("/var/lib/chaser/agent")
    images_dir: Path = Path("/var/lib/chaser/images")
    # Where to register and heartbeat; None runs the agent unregistered.
    scheduler_url: str | None = None
    # Shared secret between the scheduler and its agents: 32 random bytes or
    # more (`openssl rand -hex 32`); a weaker one is refused at start.
    token: SecretStr

    @field_validator("token")
    @classmethod
    def _token_strong(cls, token: SecretStr) -> SecretStr:
        check_strong_secret("token", token.get_secret_value())
        return token

    max_sandboxes: int = Field(default=64, ge=1)
    heartbeat_interval: float = Field(default=2.0, gt=0)
    start_timeout: float = Field(default=30.0, gt=0)
    exec_output_limit: int = Field(default=1 << 20, ge=1024)
    # The in-sandbox agent's bundle (``vmimages.bundle``): built in images_dir if unset.
    sandbox_bundle: Path | None = None
    # Containers' root is this range of host ids (``/etc/subuid`` and
    # ``/etc/subgid`` must give it to root: the install step adds it).
    container_id_first: int = Field(default=100_000, ge=1)
    container_id_count: int = Field(default=65_536, ge=65_536)
    # Operator names for built images, e.g. {"node:20": "debian:bookworm"}:
    # the names a team's pipelines already use, mapped to images this host has.
    image_aliases: dict[str, str] = Field(default_factory=dict)
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
    # The storage pool of workspace disks and snapshots; <state_dir>/storage
    # if unset. Put it on XFS (reflink=1) or btrfs for O(1) snapshots and clones.
    storage_dir: Path | None = None
    # Deadlines of disk operations (a sparse copy where there is no
    # reflink), and of cloning a repository into a new workspace.
    disk_op_timeout: float = Field(default=600.0, gt=0)
    import_timeout: float = Field(default=600.0, gt=0)
    # The runtimes this agent runs; each image says which one it needs
    # (debian:bookworm is a container, debian:bookworm-vm a microVM).
    runtimes: tuple[Literal["lxc", "qemu"], ...] = ("lxc", "qemu")
    qemu_binary: str = "qemu-system-x86_64"
    # Guest RAM and vCPUs of a VM without limits (tests of the runtime
    # alone); a session's VM gets its limits' memory and CPUs.
    vm_memory_mb: int = Field(default=256, ge=64)
    vm_vcpus: int = Field(default=1, ge=1)
    # Start VM sessions from a snapshot of a booted guest of their image
    # (built in the background after the image's first cold boot).
    vm_warm_start: bool = True
    # Take VM sessions on a host where KVM cannot run guests, under QEMU's
    # TCG emulation: 10-50x slower, and with no hardware boundary (the
    # guest's code is translated and run by QEMU itself, jailed as it is).
    # False: such a host offers no VM image (running VMs are kept) and
    # refuses new VM sessions with image_unavailable; host info says so.
    vm_allow_tcg: bool = True
    # The uids (and gids) VMs' QEMUs run as, one per running VM: vm_uid_count
    # of them from vm_uid_first. Clear of the host's users and of the
    # containers' subordinate ids (100000-165535 in /etc/subuid). Agents on
    # one host may share the range: each launch takes one no live process
    # has, under a lock in run_dir they all share.
    vm_uid_first: int = Field(default=VmUids.first, ge=1000)
    vm_uid_count: int = Field(default=VmUids.count, ge=1)
    # Short paths for VM sockets (a unix socket path has at most 108 bytes)
    # and the cached accelerator probe; a tmpfs, so the probe reruns at boot.
    run_dir: Path = Path("/run/chaser")
    # Embedded mode tears everything down on exit; a host service keeps
    # sandboxes running across agent restarts and re-adopts them.
    destroy_on_shutdown: bool = False
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # Sandboxes' writable layers live on a btrfs filesystem in this sparse
    # file (made on first start), one quota-limited subvolume each.
    scratch_size_gb: int = Field(default=256, ge=1)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    warm_pool: WarmPoolConfig = Field(default_factory=WarmPoolConfig)

    @field_validator("image_aliases")
    @classmethod
    def _aliases_name_known_images(cls, aliases: dict[str, str]) -> dict[str, str]:
        for alias, target in aliases.items():
            if not alias.strip() or vmimages.resolve(alias) is not None:
                raise ValueError(f"image alias {alias!r} is empty or already an image name")
            if vmimages.resolve(target) is None:
                raise ValueError(f"image alias {alias!r} names unknown image {target!r}")
        return aliases

    @model_validator(mode="after")
    def _vm_uids_fit(self) -> AgentConfig:
        if self.vm_uid_first + self.vm_uid_count > 0xFFFFFFFF:  # (uid_t)-1 is no uid
            raise ValueError("vm_uid_first + vm_uid_count must not pass 4294967295")
        return self
