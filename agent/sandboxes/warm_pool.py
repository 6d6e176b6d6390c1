"""Sandboxes started ahead of requests, so that a create takes one instead of booting.

Starting a container (``lxc-start``, then the in-sandbox agent's Python
coming up) is most of a session create. The pool keeps ``size`` started
sandboxes of each of its kinds (an image name), made by ``boot`` in the
background while the host has room (``room``: how many more sandboxes it may
hold); ``take`` hands one out, at most once, and the pool makes another. At
exit, those never taken are ``discard``-ed. What a started sandbox is, and
which requests may take one, is the caller's (``SandboxManager``); this is
only the bookkeeping and the refill loop, so it is tested without sandboxes.

A boot that fails is logged and retried after a back-off that doubles up to
a minute: a broken image must not turn the pool into a busy loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import trio

log = logging.getLogger(__name__)

T = TypeVar("T")

_RECHECK = 1.0  # how often an idle pool looks for room freed elsewhere
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 60.0


class WarmPool(Generic[T]):
    def __init__(
        self,
        kinds: Sequence[str],
        size: int,
        *,
        boot: Callable[[str], Awaitable[T]],
        discard: Callable[[T], Awaitable[None]],
        room: Callable[[], int],
    ) -> None:
        self.size = size
        self._boot = boot
        self._discard = discard
        self._room = room
        self._ready: dict[str, list[T]] = {kind: [] for kind in kinds}
        self._booting = 0
        self._wake = trio.Event()
        self._backoff = 0.0

    def __len__(self) -> int:
        """Sandboxes the pool holds or is starting: they take room on the host as sessions do."""
        return sum(map(len, self._ready.values())) + self._booting

    def ready(self) -> dict[str, int]:
        return {kind: len(items) for kind, items in self._ready.items()}

    def take(self, kind: str) -> T | None:
        """A started sandbox of ``kind``, now the caller's; None if none is ready."""
        items = self._ready.get(kind)
        if not items:
            return None
        self._wake.set()
        return items.pop()

    async def shrink(self) -> bool:
        """Discard one ready sandbox (room for a request the pool cannot serve); whether there was one."""
        for items in self._ready.values():
            if items:
                await self._discard(items.pop())
                return True
        return False

    def _wanted(self) -> str | None:
        """The kind to start next, if the pool lacks one and the host has room."""
        if self._room() <= 0:
            return None
        kind = min(self._ready, key=lambda k: len(self._ready[k]), default=None)
        if kind is None or len(self._ready[kind]) >= self.size:
            return None
        return kind

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the pool full until cancelled; then discard what was never taken."""
        task_status.started()
        try:
            while True:
                kind = self._wanted()
                if kind is None:
                    self._wake = trio.Event()
                    with trio.move_on_after(_RECHECK):
                        await self._wake.wait()
                    continue
                await self._fill_one(kind)
        finally:
            with trio.CancelScope(shield=True):
                for items in self._ready.values():
                    while items:
                        await self._discard(items.pop())

    async def _fill_one(self, kind: str) -> None:
        self._booting += 1
        try:
            item = await self._boot(kind)
        except Exception as exc:
            self._backoff = min(max(self._backoff * 2, _BACKOFF_FIRST), _BACKOFF_MAX)
            log.warning("could not start a %s sandbox ahead (%s); trying again in %gs", kind, exc, self._backoff)
            await trio.sleep(self._backoff)
            return
        finally:
            self._booting -= 1
        self._backoff = 0.0
        self._ready[kind].append(item)
