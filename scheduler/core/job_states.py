"""The job state machine, without I/O: which event takes a job from which state where.

::

    (submit) ──▶ queued ◀──due── scheduled ◀──(submit with run_at in the future)
                   │ claim
                   ▼
                running ──finish──▶ succeeded | failed
                   │ ╲──cancel request: stays running; the worker kills the work──▶ canceled
                   │  ╲─interrupted before it started (host full, scheduler gone)
                   │     ──▶ queued | scheduled again, or failed when out of attempts
    queued | scheduled ──cancel──▶ canceled
    failed | canceled ──retry──▶ queued (a new attempt, history kept)

The store applies a transition with a guarded UPDATE (``WHERE status`` = the
state it was computed from, or for its bulk moves the states ``moves`` gives),
so racing writers (replicas, an API call, a worker) resolve to exactly one
winner; a loser reads the job again and asks the machine again. Illegal
requests raise ``InvalidTransition``, a 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from chaser.wire import errors


class Status(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})
WAITING = frozenset({Status.QUEUED, Status.SCHEDULED})


@dataclass(frozen=True)
class Submit:
    run_at: float
    now: float


@dataclass(frozen=True)
class Due:
    """A scheduled job's ``run_at`` has come."""


@dataclass(frozen=True)
class Claim:
    """A worker takes a queued job and begins an attempt."""


@dataclass(frozen=True)
class Finish:
    succeeded: bool


@dataclass(frozen=True)
class CancelRequest:
    """A caller asks to cancel."""


@dataclass(frozen=True)
class Stopped:
    """The worker stopped a running attempt because a cancel was requested."""


@dataclass(frozen=True)
class Interrupted:
    """The attempt ended before its work started; ``retry_at`` None means no attempts are left."""

    retry_at: float | None
    now: float


@dataclass(frozen=True)
class Retry:
    """A caller asks for a new attempt."""


Event = Submit | Due | Claim | Finish | CancelRequest | Stopped | Interrupted | Retry


@dataclass(frozen=True)
class Transition:
    status: Status
    # The job stays running, but its worker must stop the work.
    stop_worker: bool = False


class InvalidTransition(errors.Conflict):
    """An event the job's state does not allow (a 409 for API callers)."""


class JobStateMachine:
    """A job's status and pending cancel request; ``apply`` moves it by one event."""

    def __init__(self, status: Status | None = None, *, cancel_requested: bool = False) -> None:
        self.status = status
        self.cancel_requested = cancel_requested

    def apply(self, event: Event) -> Transition:
        transition = self._next(event)
        self.status = transition.status
        if transition.stop_worker:
            self.cancel_requested = True
        elif transition.status is not Status.RUNNING:
            self.cancel_requested = False
        return transition

    def _next(self, event: Event) -> Transition:
        status = self.status
        if status not in _FROM[type(event)]:
            raise _refusal(event, status)
        match event:
            case Submit(run_at=run_at, now=now):
                return Transition(Status.SCHEDULED if run_at > now else Status.QUEUED)
            case Due():
                return Transition(Status.QUEUED)
            case Claim():
                return Transition(Status.RUNNING)
            case Finish(succeeded=succeeded):
                return Transition(Status.SUCCEEDED if succeeded else Status.FAILED)
            case Stopped() if self.cancel_requested:
                return Transition(Status.CANCELED)
            case Interrupted(retry_at=retry_at, now=now):
                if self.cancel_requested:
                    return Transition(Status.CANCELED)
                if retry_at is None:
                    return Transition(Status.FAILED)
                return Transition(Status.SCHEDULED if retry_at > now else Status.QUEUED)
            case CancelRequest() if status is Status.RUNNING:
                return Transition(Status.RUNNING, stop_worker=True)
            case CancelRequest():
                return Transition(Status.CANCELED)
            case Retry():
                return Transition(Status.QUEUED)
        raise _refusal(event, status)


# The states each event moves a job from (None: not yet submitted).
_FROM: dict[type[Event], frozenset[Status | None]] = {
    Submit: frozenset({None}),
    Due: frozenset({Status.SCHEDULED}),
    Claim: frozenset({Status.QUEUED}),
    Finish: frozenset({Status.RUNNING}),
    Stopped: frozenset({Status.RUNNING}),
    Interrupted: frozenset({Status.RUNNING}),
    CancelRequest: WAITING | {Status.RUNNING},
    Retry: frozenset({Status.FAILED, Status.CANCELED}),
}


def moves(event: type[Event]) -> tuple[Status, ...]:
    """The states ``event`` moves a job from: what the store's guarded UPDATEs test for."""
    return tuple(sorted(s for s in _FROM[event] if s is not None))


def _refusal(event: Event, status: Status | None) -> InvalidTransition:
    if isinstance(event, CancelRequest) and status in TERMINAL:
        return InvalidTransition(f"the job has already {status}; there is nothing to cancel", code="job_finished")
    if isinstance(event, Retry) and status is Status.SUCCEEDED:
        return InvalidTransition(
            "the job succeeded; only a failed or canceled job can be retried", code="job_succeeded"
        )
    if isinstance(event, Retry):
        return InvalidTransition(
            f"the job is {status}; only a failed or canceled job can be retried", code="job_not_finished"
        )
    return InvalidTransition(f"{type(event).__name__} is not allowed when a job is {status}", code="invalid_state")
