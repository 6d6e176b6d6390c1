"""The session state machine: what each event moves a session from and to."""

from __future__ import annotations

import pytest

from scheduler.core.session_states import ACTIVE, SessionEvent, SessionStatus, allows, moves, target

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("status", "event", "to"),
    [
        (SessionStatus.CREATING, SessionEvent.MOVED, SessionStatus.CREATING),
        (SessionStatus.CREATING, SessionEvent.STARTED, SessionStatus.RUNNING),
        (SessionStatus.RUNNING, SessionEvent.PAUSED, SessionStatus.PAUSED),
        (SessionStatus.PAUSED, SessionEvent.RESUMED, SessionStatus.RUNNING),
        (SessionStatus.CREATING, SessionEvent.ENDED, SessionStatus.TERMINATED),
        (SessionStatus.RUNNING, SessionEvent.ENDED, SessionStatus.TERMINATED),
        (SessionStatus.PAUSED, SessionEvent.ENDED, SessionStatus.TERMINATED),
    ],
)
def test_allowed_moves(status: SessionStatus, event: SessionEvent, to: SessionStatus) -> None:
    assert allows(status, event) and target(event) is to


def test_terminated_is_final() -> None:
    assert not any(allows(SessionStatus.TERMINATED, event) for event in SessionEvent)


@pytest.mark.parametrize(
    ("status", "event"),
    [
        (SessionStatus.RUNNING, SessionEvent.STARTED),  # a create finishing after a resume, say
        (SessionStatus.PAUSED, SessionEvent.PAUSED),
        (SessionStatus.CREATING, SessionEvent.PAUSED),
        (SessionStatus.RUNNING, SessionEvent.RESUMED),
        (SessionStatus.RUNNING, SessionEvent.MOVED),
    ],
)
def test_refused_moves(status: SessionStatus, event: SessionEvent) -> None:
    assert not allows(status, event)


def test_active_is_every_status_that_can_end() -> None:
    assert set(moves(SessionEvent.ENDED)) == set(ACTIVE) == set(SessionStatus) - {SessionStatus.TERMINATED}
