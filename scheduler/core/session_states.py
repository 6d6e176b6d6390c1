"""The session state machine, without I/O: which event takes a session from which status where.

::

    creating ──started──▶ running ──paused──▶ paused
       │ ╲moved (to the next host)  ◀──resumed──╯
       ╰──────────── ended (any active status) ────────▶ terminated

A create that fails leaves no row (it is deleted, not ended). The store
applies an event with a guarded UPDATE (``WHERE status IN moves(event)``),
so racing writers (a create finishing while a delete or the reconciler
runs) resolve to exactly one winner.
"""

from __future__ import annotations

from enum import StrEnum


class SessionStatus(StrEnum):
    CREATING = "creating"
    RUNNING = "running"
    PAUSED = "paused"
    TERMINATED = "terminated"


class SessionEvent(StrEnum):
    MOVED = "moved"  # a create goes on to the next host
    STARTED = "started"  # its host made the sandbox
    PAUSED = "paused"
    RESUMED = "resumed"
    ENDED = "ended"  # terminated, whatever the reason


# A paused session still holds its host's disk: everything but terminated.
ACTIVE = (SessionStatus.CREATING, SessionStatus.RUNNING, SessionStatus.PAUSED)

_TRANSITIONS: dict[SessionEvent, tuple[tuple[SessionStatus, ...], SessionStatus]] = {
    SessionEvent.MOVED: ((SessionStatus.CREATING,), SessionStatus.CREATING),
    SessionEvent.STARTED: ((SessionStatus.CREATING,), SessionStatus.RUNNING),
    SessionEvent.PAUSED: ((SessionStatus.RUNNING,), SessionStatus.PAUSED),
    SessionEvent.RESUMED: ((SessionStatus.PAUSED,), SessionStatus.RUNNING),
    SessionEvent.ENDED: (ACTIVE, SessionStatus.TERMINATED),
}


def moves(event: SessionEvent) -> tuple[SessionStatus, ...]:
    """The statuses ``event`` moves a session from."""
    return _TRANSITIONS[event][0]


def target(event: SessionEvent) -> SessionStatus:
    """The status ``event`` moves a session to."""
    return _TRANSITIONS[event][1]


def allows(status: str, event: SessionEvent) -> bool:
    """Whether a session in ``status`` may take ``event``."""
    return status in moves(event)
