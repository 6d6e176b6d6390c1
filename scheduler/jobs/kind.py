"""A job kind, and the registry of them.

Each kind is one module in ``scheduler/jobs/kinds/`` that defines a pydantic
input model and a ``JobKind`` subclass, and registers an instance when
imported. The input model both validates ``POST /v1/jobs`` and is the JSON
Schema ``GET /v1/jobs/kinds`` serves, so the two cannot disagree.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from chaser.wire import errors
from scheduler.jobs.context import JobRun, JobServices

InputT = TypeVar("InputT", bound=BaseModel)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, when it ran to its end."""

    succeeded: bool
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @classmethod
    def failure(cls, exc: errors.ApiError, result: dict[str, Any] | None = None) -> Outcome:
        return cls(False, result, {"code": exc.code, "message": exc.message, "status": exc.status})


class CannotReattach(Exception):
    """The kind cannot pick up a started attempt after a crash."""


class JobKind(abc.ABC, Generic[InputT]):
    name: ClassVar[str]
    description: ClassVar[str]
    # Needed to create, cancel or retry jobs of this kind; ``read_scope``
    # (or ``scope``) to see them.
    scope: ClassVar[str]
    read_scope: ClassVar[str]
    # Optional services the kind needs (attributes of ``JobServices``); a
    # deployment without them does not offer the kind.
    needs: ClassVar[frozenset[str]] = frozenset()
    input_model: type[InputT]

    def parse(self, raw: Mapping[str, Any]) -> InputT:
        """Validate input (raises pydantic's ``ValidationError``)."""
        return self.input_model.model_validate(raw)

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    def available(self, services: JobServices) -> bool:
        return all(getattr(services, need, None) is not None for need in self.needs)

    @abc.abstractmethod
    async def run(self, run: JobRun, data: InputT) -> Outcome:
        """Do the work of a fresh attempt, checkpointing as it goes."""

    async def reattach(self, run: JobRun, data: InputT) -> Outcome:
        """Finish a started attempt another worker began (its checkpoint is in ``run``)."""
        raise CannotReattach

    async def cleanup(self, run: JobRun, data: InputT, *, kill: bool) -> None:
        """Release what the attempt holds (from its checkpoint); ``kill`` stops work still running.

        Called after every attempt except one cut off by a scheduler
        shutdown (that one is re-attached or cleaned up by whoever takes it
        over), shielded from cancellation, under a deadline.
        """


_registry: dict[str, JobKind[Any]] = {}


def register(kind: JobKind[Any]) -> None:
    if kind.name in _registry:
        raise ValueError(f"job kind {kind.name!r} is registered twice")
    _registry[kind.name] = kind


def registered() -> Mapping[str, JobKind[Any]]:
    """Every kind, once ``scheduler.jobs.kinds`` has been imported."""
    return _registry
