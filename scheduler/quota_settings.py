"""The quotas' settings: the operator's defaults and ceiling, and an account's overrides.

Apart from ``scheduler.quotas`` so the configuration can name them without
importing the store.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pydantic import BaseModel, ConfigDict, Field


class QuotaLimits(BaseModel):
    """One value per limit; in an account's overrides, None means the operator's default."""

    model_config = ConfigDict(extra="forbid")
    sessions: int | None = Field(default=None, ge=0)
    cpus: float | None = Field(default=None, ge=0)
    memory_mb: int | None = Field(default=None, ge=0)
    workspaces: int | None = Field(default=None, ge=0)
    queued_jobs: int | None = Field(default=None, ge=0)
    webhooks: int | None = Field(default=None, ge=0)


class DefaultQuotas(QuotaLimits):
    """Everyone's limits; a key left out of the configuration keeps its default here."""

    sessions: int | None = Field(default=50, ge=0)
    cpus: float | None = Field(default=64.0, ge=0)
    memory_mb: int | None = Field(default=131_072, ge=0)
    workspaces: int | None = Field(default=100, ge=0)
    queued_jobs: int | None = Field(default=1000, ge=0)
    webhooks: int | None = Field(default=20, ge=0)


class CeilingQuotas(QuotaLimits):
    """The most an account may raise its own limits to."""

    sessions: int | None = Field(default=500, ge=0)
    cpus: float | None = Field(default=512.0, ge=0)
    memory_mb: int | None = Field(default=1_048_576, ge=0)
    workspaces: int | None = Field(default=1000, ge=0)
    queued_jobs: int | None = Field(default=10_000, ge=0)
    webhooks: int | None = Field(default=100, ge=0)


class QuotaSettings(BaseModel):
    """The operator's ``quotas``: everyone's limits, and the most an account may raise its own to."""

    model_config = ConfigDict(extra="forbid")
    default: DefaultQuotas = Field(default_factory=DefaultQuotas)
    ceiling: CeilingQuotas = Field(default_factory=CeilingQuotas)


@dataclass(frozen=True)
class Usage:
    """What an account holds, or what one insert adds to it."""

    sessions: int = 0
    cpus: float = 0.0
    memory_mb: int = 0
    workspaces: int = 0
    queued_jobs: int = 0
    webhooks: int = 0

    def as_json(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
