"""The job state machine, fed events without any I/O."""

from __future__ import annotations

import pytest

from scheduler.core.job_states import (
    CancelRequest,
    Claim,
    Due,
    Event,
    Finish,
    Interrupted,
    InvalidTransition,
    JobStateMachine,
    Retry,
    Status,
    Stopped,
    Submit,
    moves,
)

pytestmark = pytest.mark.fast

NOW = 1_000.0


def feed(*events: Event) -> JobStateMachine:
    machine = JobStateMachine()
    for event in events:
        machine.apply(event)
    return machine


@pytest.mark.parametrize(
    ("events", "status"),
    [
        ((Submit(NOW, NOW),), Status.QUEUED),
        ((Submit(NOW - 60, NOW),), Status.QUEUED),  # run_at in the past is now
        ((Submit(NOW + 60, NOW),), Status.SCHEDULED),
        ((Submit(NOW + 60, NOW), Due()), Status.QUEUED),
        ((Submit(NOW, NOW), Claim()), Status.RUNNING),
        ((Submit(NOW, NOW), Claim(), Finish(succeeded=True)), Status.SUCCEEDED),
        ((Submit(NOW, NOW), Claim(), Finish(succeeded=False)), Status.FAILED),
        ((Submit(NOW, NOW), CancelRequest()), Status.CANCELED),
        ((Submit(NOW + 60, NOW), CancelRequest()), Status.CANCELED),
        ((Submit(NOW, NOW), Claim(), CancelRequest()), Status.RUNNING),  # until the worker stops it
        ((Submit(NOW, NOW), Claim(), CancelRequest(), CancelRequest()), Status.RUNNING),
        ((Submit(NOW, NOW), Claim(), CancelRequest(), Stopped()), Status.CANCELED),
        ((Submit(NOW, NOW), Claim(), Finish(succeeded=False), Retry()), Status.QUEUED),
        ((Submit(NOW, NOW), CancelRequest(), Retry(), Claim()), Status.RUNNING),
        ((Submit(NOW, NOW), Claim(), Interrupted(retry_at=NOW, now=NOW)), Status.QUEUED),
        ((Submit(NOW, NOW), Claim(), Interrupted(retry_at=NOW + 4, now=NOW)), Status.SCHEDULED),
        ((Submit(NOW, NOW), Claim(), Interrupted(retry_at=None, now=NOW)), Status.FAILED),
        ((Submit(NOW, NOW), Claim(), CancelRequest(), Interrupted(retry_at=NOW, now=NOW)), Status.CANCELED),
    ],
)
def test_paths(events: tuple[Event, ...], status: Status) -> None:
    assert feed(*events).status is status


def test_cancel_request_asks_the_worker_to_stop() -> None:
    machine = feed(Submit(NOW, NOW), Claim())
    transition = machine.apply(CancelRequest())
    assert transition.stop_worker and machine.cancel_requested
    # A finished attempt wins over a cancel that came too late.
    assert machine.apply(Finish(succeeded=True)).status is Status.SUCCEEDED
    assert not machine.cancel_requested


def test_retry_starts_clean() -> None:
    machine = feed(Submit(NOW, NOW), Claim(), CancelRequest(), Stopped(), Retry(), Claim())
    assert machine.status is Status.RUNNING and not machine.cancel_requested


@pytest.mark.parametrize(
    ("events", "bad", "code"),
    [
        ((Submit(NOW, NOW), Claim(), Finish(succeeded=True)), CancelRequest(), "job_finished"),
        ((Submit(NOW, NOW), Claim(), Finish(succeeded=False)), CancelRequest(), "job_finished"),
        ((Submit(NOW, NOW), CancelRequest()), CancelRequest(), "job_finished"),
        ((Submit(NOW, NOW), Claim()), Retry(), "job_not_finished"),
        ((Submit(NOW, NOW),), Retry(), "job_not_finished"),
        ((Submit(NOW + 60, NOW),), Retry(), "job_not_finished"),
        ((Submit(NOW, NOW), Claim(), Finish(succeeded=True)), Retry(), "job_succeeded"),
        ((Submit(NOW, NOW),), Finish(succeeded=True), "invalid_state"),
        ((Submit(NOW, NOW),), Due(), "invalid_state"),
        ((Submit(NOW, NOW), Claim()), Claim(), "invalid_state"),
        ((Submit(NOW, NOW), Claim()), Stopped(), "invalid_state"),  # no cancel was asked for
        ((Submit(NOW, NOW),), Submit(NOW, NOW), "invalid_state"),
    ],
)
def test_illegal_events_are_conflicts(events: tuple[Event, ...], bad: Event, code: str) -> None:
    machine = feed(*events)
    before = machine.status
    with pytest.raises(InvalidTransition) as raised:
        machine.apply(bad)
    assert raised.value.status == 409 and raised.value.code == code
    assert machine.status is before


@pytest.mark.parametrize(
    "event", [Due(), Claim(), Finish(succeeded=True), Interrupted(retry_at=None, now=NOW), CancelRequest(), Retry()]
)
def test_moves_are_the_states_the_machine_accepts(event: Event) -> None:
    """The store's guarded UPDATEs test for ``moves``: it must be exactly where the machine allows the event."""
    for status in Status:
        machine = JobStateMachine(status)
        try:
            machine.apply(event)
        except InvalidTransition:
            assert status not in moves(type(event))
        else:
            assert status in moves(type(event))
