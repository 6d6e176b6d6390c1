"""Holding leases for live connections, and ending them when they must end.

``LeaseKeeper`` wraps the lease table (``agent.sandboxes.leases``) with the I/O: each
connection handler holds its lease in ``async with keeper.hold(...)``,
whose body runs in a cancel scope that the keeper cancels when the lease
expires (client gone silent, or only pinging for too long) or when the
sandbox is terminated with force. The handler then tells its client why
(``lease.ended_because``) and closes. Leases live only in this process: an
agent that restarts has lost its connections, and its leases with them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import trio

from agent.sandboxes.leases import Lease, LeaseRefused, LeaseTable
from chaser.wire import errors

log = logging.getLogger(__name__)

_SWEEP_INTERVAL = 0.5


class LeaseKeeper:
    def __init__(self, keepalive_timeout: float, idle_timeout: float) -> None:
        self.table = LeaseTable(keepalive_timeout, idle_timeout)
        self._scopes: dict[int, trio.CancelScope] = {}
        self._closed: dict[int, trio.Event] = {}

    def now(self) -> float:
        return trio.current_time()

    @contextlib.asynccontextmanager
    async def hold(self, sandbox_id: str, kind: str, *, keepalive: bool = True) -> AsyncIterator[Lease]:
        """A lease for the body's duration; the body is cancelled if the lease is ended."""
        try:
            lease = self.table.open(sandbox_id, kind, self.now(), keepalive=keepalive)
        except LeaseRefused as exc:
            raise errors.Conflict(str(exc), code="session_terminating") from None
        scope = trio.CancelScope()
        self._scopes[lease.id] = scope
        self._closed[lease.id] = trio.Event()
        log.info("lease %s opened (%s)", lease.id, kind, extra={"session_id": sandbox_id})
        try:
            with scope:
                yield lease
        finally:
            self.table.close(lease.id)
            self._scopes.pop(lease.id, None)
            self._closed.pop(lease.id).set()
            log.info(
                "lease %s closed%s", lease.id, f": {lease.ended_because}" if lease.ended_because else "",
                extra={"session_id": sandbox_id},
            )  # fmt: skip

    def seen(self, lease: Lease) -> None:
        self.table.seen(lease.id, self.now())

    def active(self, lease: Lease) -> None:
        self.table.active(lease.id, self.now())

    def touch(self, sandbox_id: str) -> None:
        self.table.touch(sandbox_id, self.now())

    def count(self, sandbox_id: str) -> int:
        return self.table.count(sandbox_id)

    def idle_for(self, sandbox_id: str) -> float | None:
        """Seconds since the sandbox's last activity; 0 while any lease is open."""
        if self.table.count(sandbox_id):
            return 0.0
        last = self.table.last_activity(sandbox_id)
        return None if last is None else max(self.now() - last, 0.0)

    def _end(self, lease: Lease) -> None:
        """Cancel the lease's connection, and stop counting it at once.

        The handler may take a while to finish (a write to a client that
        reads nothing only fails when the front gives up on it), but the
        connection is no longer served: it holds the session no longer.
        """
        self.table.close(lease.id)
        scope = self._scopes.get(lease.id)
        if scope is not None:
            scope.cancel()

    def release(self, lease: Lease, reason: str) -> None:
        """End a lease from its own handler's side (a client too slow to serve)."""
        lease.ended_because = lease.ended_because or reason
        self._end(lease)

    async def drain(self, sandbox_id: str, reason: str, timeout: float = 5.0) -> None:
        """Refuse new leases on the sandbox and end its open ones; wait (bounded) until they closed."""
        leases = self.table.drain(sandbox_id, reason)
        for lease in leases:
            self._end(lease)
        with trio.move_on_after(timeout):
            for lease in leases:
                closed = self._closed.get(lease.id)
                if closed is not None:
                    await closed.wait()

    def undrain(self, sandbox_id: str) -> None:
        self.table.undrain(sandbox_id)

    def forget(self, sandbox_id: str) -> None:
        self.table.forget(sandbox_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """End expired leases, for ever."""
        task_status.started()
        while True:
            for lease in self.table.expired(self.now()):
                log.info("lease %s expired: %s", lease.id, lease.ended_because, extra={"session_id": lease.sandbox_id})
                self._end(lease)
            await trio.sleep(_SWEEP_INTERVAL)
