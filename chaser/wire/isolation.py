"""What a session may use and reach: its resource limits and egress policy.

These shapes travel unchanged from the public API (``POST /v1/sessions``,
``POST /v1/exec``) through the scheduler to the agent, so both validate with
the same models; each host then resolves omitted limits to its defaults and
refuses values above its maxima.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chaser.wire import errors

NetworkMode = Literal["egress", "none"]

Port = Annotated[int, Field(ge=1, le=65535)]


class EgressRule(BaseModel):
    """One allowed destination: an IPv4 network, optionally only some ports (TCP and UDP)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    cidr: str = Field(min_length=1, max_length=43)
    ports: list[Port] | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("cidr")
    @classmethod
    def _ipv4_network(cls, value: str) -> str:
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network in CIDR notation (like 203.0.113.0/24)") from None
        if network.version != 4:
            raise ValueError("sessions have IPv4 networking only; give an IPv4 network")
        return str(network)


EgressAllowList = Annotated[list[EgressRule], Field(max_length=64)]


class Limits(BaseModel):
    """Resources of one session; ``None`` takes the host's default."""

    model_config = ConfigDict(extra="forbid", strict=True)
    cpus: float | None = Field(default=None, gt=0, le=1024)
    memory_mb: int | None = Field(default=None, ge=32, le=1 << 24)
    pids: int | None = Field(default=None, ge=32, le=1 << 22)
    disk_mb: int | None = Field(default=None, ge=64, le=1 << 24)

    def exceeding(self, maximum: Limits) -> list[str]:
        """The fields above ``maximum``, each with the maximum, for an error message."""
        over = []
        for name in type(self).model_fields:
            value, cap = getattr(self, name), getattr(maximum, name)
            if value is not None and cap is not None and value > cap:
                over.append(f"{name} {value:g} is above the maximum {cap:g}")
        return over

    def resolved(self, default: Limits, maximum: Limits) -> Limits:
        """Every field set: requested, else the default (capped by ``maximum``); 422 when above it."""
        over = self.exceeding(maximum)
        if over:
            raise errors.InvalidInput("; ".join(over), code="limit_exceeded")
        values = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                value, cap = getattr(default, name), getattr(maximum, name)
                value = min(value, cap) if value is not None and cap is not None else value
            values[name] = value
        return Limits(**values)
