"""The quotas' settings: the operator's defaults and ceiling, and an account's overrides.

Apart from ``scheduler.quotas`` so the configuration can name them without
importing the store.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

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


def _limits(**values: Any) -> QuotaLimits:
    return QuotaLimits(**values)


class QuotaSettings(BaseModel):
    """The operator's ``quotas``: everyone's limits, and the most an account may raise its own to."""

    model_config = ConfigDict(extra="forbid")
    default: QuotaLimits = Field(
        default_factory=lambda: _limits(
            sessions=50, cpus=64.0, memory_mb=131_072, workspaces=100, queued_jobs=1000, webhooks=20
        )
    )
    ceiling: QuotaLimits = Field(
        default_factory=lambda: _limits(
            sessions=500, cpus=512.0, memory_mb=1_048_576, workspaces=1000, queued_jobs=10_000, webhooks=100
        )
    )


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
