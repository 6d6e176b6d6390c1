"""Run work in a service's nursery and wait for it, without ever crashing the service.

Work that must not be cut off half-way by a client hanging up (provisioning
a session, pausing it, changing a workspace's disk) runs in the owning
service's nursery, and the request only waits for the outcome. An exception
escaping into that nursery would end the service, and with it the
scheduler: so every failure is caught here and handed to the waiting
request as an API error instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
import trio

from chaser.wire import errors

log = logging.getLogger(__name__)

T = TypeVar("T")


async def run_detached(nursery: trio.Nursery, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` in ``nursery`` and return its result, or raise its failure as an ``ApiError``.

    API errors pass through as they are; the store failing is 503
    ``store_unavailable``; a deadline passing is 504 ``operation_timeout``;
    anything else is logged and becomes 503 ``operation_failed``.
    """
    done = trio.Event()
    results: list[T] = []
    failures: list[errors.ApiError] = []

    async def runner() -> None:
        try:
            results.append(await work())
        except Exception as exc:  # nothing may reach the service's nursery
            failures.append(as_api_error(exc))
        finally:
            done.set()

    nursery.start_soon(runner)
    await done.wait()
    if failures:
        raise failures[0]
    return results[0]


def as_api_error(exc: Exception) -> errors.ApiError:
    """The API error a failure of detached work answers with."""
    if isinstance(exc, errors.ApiError):
        return exc
    if isinstance(exc, sa.exc.SQLAlchemyError):
        log.warning("the store failed under detached work: %s", exc)
        return errors.Unavailable("the store is unavailable; try again", code="store_unavailable")
    if isinstance(exc, trio.TooSlowError):
        return errors.Timeout("the operation did not finish in time", code="operation_timeout")
    log.error("detached work failed", exc_info=exc)
    return errors.Unavailable("the operation failed; try again", code="operation_failed")
