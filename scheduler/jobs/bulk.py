"""Bulk jobs: one operation over many items, each reported on its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from chaser.wire import errors
from scheduler.jobs.kind import Outcome

# Items worked on at once: enough to overlap the hosts' answers, few
# enough not to crowd out other work.
_CONCURRENCY = 8


async def each(
    items: Sequence[str], key: str, operation: Callable[[str], Awaitable[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Run ``operation`` on every item; an item's API error becomes its result, never the job's.

    Each result names its item under ``key``.
    """
    results: list[dict[str, Any]] = [{} for _ in items]
    limiter = trio.CapacityLimiter(_CONCURRENCY)

    async def one(index: int, item: str) -> None:
        async with limiter:
            try:
                results[index] = {key: item, **await operation(item)}
            except errors.ApiError as exc:
                results[index] = {key: item, "error": {"code": exc.code, "message": exc.message, "status": exc.status}}

    async with trio.open_nursery() as nursery:
        for index, item in enumerate(items):
            nursery.start_soon(one, index, item)
    return results


def outcome(results: list[dict[str, Any]], noun: str) -> Outcome:
    """Succeeded if every item did; otherwise failed, saying how many did not."""
    failed = sum("error" in r for r in results)
    result = {"results": results, "succeeded": len(results) - failed, "failed": failed}
    if not failed:
        return Outcome(True, result)
    error = {"code": "partial_failure", "message": f"{failed} of {len(results)} {noun} could not be processed"}
    return Outcome(False, result, error)
