"""Request models shared by the routes and the job kinds, and their bases.

Bodies are strict JSON, query strings are lax text; unknown keys are
refused. What more than one room reads (an exec's body, a session id in a
path) lives here, so the routes, the lifecycle and the job kinds import it
from one place rather than from each other.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from chaser.wire import errors
from chaser.wire.isolation import EgressAllowList, Limits, NetworkMode


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


def path_id(raw: str, what: str) -> str:
    """A UUID from a path, normalised; anything else is an id nobody has: 404."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise errors.NotFound(f"{what} {raw} not found", code=f"{what.replace(' ', '_')}_not_found") from None


MAX_TIMEOUT_MS = 3_600_000
DEFAULT_TIMEOUT_MS = 600_000

Selector = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ImageName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class IsolationFields(StrictBody):
    """Network policy and limits of a new session (absent: the host's defaults)."""

    network: NetworkMode | None = None
    egress_allow: EgressAllowList | None = None
    limits: Limits | None = None

    @model_validator(mode="after")
    def _allow_list_needs_egress(self) -> IsolationFields:
        if self.network == "none" and self.egress_allow:
            raise ValueError('egress_allow needs network "egress"; a session with network "none" reaches nothing')
        return self

    def given(self) -> bool:
        return self.network is not None or self.egress_allow is not None or self.limits is not None


class ExecBody(IsolationFields):
    """A command, and where it runs: a session, a workspace or a new ephemeral sandbox (exec, ``sandbox.exec``)."""

    command: str | Annotated[list[str], Field(min_length=1)] = Field(min_length=1)
    session_id: str | None = None
    workspace: Selector | None = None
    ephemeral: bool = False
    image: ImageName | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)
    timeout_ms: int = Field(default=DEFAULT_TIMEOUT_MS, gt=0, le=MAX_TIMEOUT_MS)

    @model_validator(mode="after")
    def _one_target(self) -> ExecBody:
        targets = sum([self.session_id is not None, self.workspace is not None, self.ephemeral])
        if targets != 1:
            raise ValueError("give exactly one of session_id, workspace, or ephemeral: true")
        if self.image is not None and not self.ephemeral:
            raise ValueError("image is accepted only when ephemeral is true")
        if self.given() and not self.ephemeral:
            raise ValueError("network, egress_allow and limits are accepted only when ephemeral is true")
        return self


class ForceQuery(Query):
    force: Literal["true", "false", "1", "0"] = "false"


def session_id_of(raw: str) -> str:
    """A session id from a path; not a UUID: 404 ``session_not_found``."""
    return path_id(raw, "session")
