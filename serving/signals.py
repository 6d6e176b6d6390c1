"""Run a server until SIGTERM or SIGINT, then let its cleanup run.

Without this, SIGTERM (what systemd and ``chaser down`` send) would end the
process without unwinding, and no ``finally`` would remove anything.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import Any

import trio


async def run_until_signalled(serve: Callable[..., Awaitable[Any]], *args: Any) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            await nursery.start(serve, *args)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
