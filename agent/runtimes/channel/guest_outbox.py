"""Frames waiting for a guest to read them, bounded in bytes.

A guest that stops reading its channel must not grow the host's memory.
``put`` never waits, because synchronous callers (``Process.kill``) send
too: it refuses a frame that would take the queue past its limit, and the
channel then gives the guest up. The bulk of what the host sends, input
streamed into processes, first waits for the queue to be under
``bulk_limit``, so a slow guest (or many busy inputs) slows writers down
rather than reaching the limit.
"""

from __future__ import annotations

from collections import deque

import trio


class Outbox:
    """One writer task's queue (see the module docstring); ``size`` is the bytes it holds."""

    def __init__(self, limit: int, bulk_limit: int) -> None:
        self.limit = limit
        self.bulk_limit = bulk_limit
        self.size = 0
        self._frames: deque[bytes] = deque()
        self._closed = False
        self._filled = trio.lowlevel.ParkingLot()
        self._drained = trio.lowlevel.ParkingLot()

    def put(self, frame: bytes) -> bool:
        """Queue ``frame``; False, queueing nothing, if that would take the queue past its limit."""
        if self.size + len(frame) > self.limit:
            return False
        self._frames.append(frame)
        self.size += len(frame)
        self._filled.unpark_all()
        return True

    async def take(self) -> bytes | None:
        """The next frame, once there is one; None once closed (what was left is dropped)."""
        while not self._frames and not self._closed:
            await self._filled.park()
        if self._closed:
            return None
        frame = self._frames.popleft()
        self.size -= len(frame)
        if self.has_bulk_room():
            self._drained.unpark_all()
        return frame

    def has_bulk_room(self) -> bool:
        return self.size < self.bulk_limit

    async def wait_bulk_room(self) -> None:
        """Return once the queue is under ``bulk_limit``, or closed."""
        while not self.has_bulk_room() and not self._closed:
            await self._drained.park()

    def close(self) -> None:
        self._closed = True
        self._frames.clear()
        self.size = 0
        self._filled.unpark_all()
        self._drained.unpark_all()
