"""The agent API's requests and answers, as both the scheduler and the agent see them.

The scheduler builds these to call an agent (``scheduler/agents.py``); the
agent validates the same models on arrival (``agent/http/api.py``), so a field
added here is added to both ends. Requests are strict and refuse unknown
fields; answers ignore fields they do not know, so an agent one release
ahead of its scheduler still answers in a shape the scheduler reads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from chaser.wire.isolation import EgressAllowList, Limits, NetworkMode

SandboxId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f-]{36}$")]
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
Uuid = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
Flag = Literal["true", "false", "1", "0"]


class RegistryLogin(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    username: str = Field(max_length=1024)
    password: str = Field(max_length=16384)


class CreateSandbox(BaseModel):
    """``POST /v1/sandboxes``: create and start a sandbox."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: SandboxId
    image: str = Field(min_length=1, max_length=256)
    workspace: Uuid | None = None  # the workspace disk to mount
    network: NetworkMode = "egress"
    egress_allow: EgressAllowList | None = None
    limits: Limits = Field(default_factory=Limits)
    session_type: Literal["sandbox", "browser"] = "sandbox"
    # Start from this paused sandbox's snapshot instead of booting the image
    # (with the source's limits: its memory is the snapshot's).
    fork_from: SandboxId | None = None
    # A registry image is pulled on behalf of this account, with its login
    # for the image's registry if it has one (never stored by the agent).
    account: str | None = Field(default=None, max_length=64)
    registry_login: RegistryLogin | None = None


class PauseQuery(BaseModel):
    """``POST /v1/sandboxes/<id>/pause``: forced only when asked (it ends open connections)."""

    model_config = ConfigDict(extra="forbid")
    force: Flag = "false"


class DestroyQuery(BaseModel):
    """``DELETE /v1/sandboxes/<id>``: forced unless asked not to be (then 409 while connections are open)."""

    model_config = ConfigDict(extra="forbid")
    force: Flag = "true"


class ExecRequest(BaseModel):
    """``POST /v1/sandboxes/<id>/exec``: run one command to its end."""

    model_config = ConfigDict(extra="forbid", strict=True)
    command: str | list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = Field(default=None, max_length=4096)
    timeout_ms: int | None = Field(default=None, gt=0)


class SandboxInfo(BaseModel):
    """A sandbox as its agent reports it (create, get, pause, resume)."""

    model_config = ConfigDict(extra="ignore")
    id: str
    image: str
    runtime: str
    status: str  # creating | running | pausing | paused | resuming | destroying
    created_at: float
    workspace: str | None = None
    session_type: str = "sandbox"
    # The network lease granted (``mode``, address, policy) and the limits in force.
    network: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    image_digest: str | None = None
    env: dict[str, str] | None = None
    cwd: str | None = None
    active_connection_leases: int | None = None  # only in a get


class ExecResult(BaseModel):
    """How a command ended, with its output (the tail past the host's limit)."""

    model_config = ConfigDict(extra="ignore")
    exit_code: int
    output: str
    output_truncated: bool
    timed_out: bool
    duration_ms: int
