"""Connection leases: who is connected to which sandbox, as plain bookkeeping.

Every live connection to a sandbox (a PTY WebSocket, an exec stream, a port
tunnel, a forwarded WebSocket; later CDP) holds a lease while it is open.
The count per sandbox is what ``active_connection_leases`` shows, and a
terminate without ``force`` is refused while it is not zero.

A lease ends when its connection closes, and also when:

- the client vanished without closing: nothing was heard from it (a frame, a
  ping, any byte) for ``keepalive_timeout`` seconds;
- the client only keeps it open: no real traffic (data in or out, a resize,
  a signal; pings do not count) for ``idle_timeout`` seconds. This is what
  lets a forgotten but pinging connection stop holding a session open for
  ever.

No I/O and no clock: callers pass ``now``; ``agent.sandboxes.lease_keeper`` does the
closing. The table also keeps each sandbox's last activity (leases' traffic
and ``touch`` for short requests like file transfers), which the scheduler's
idle timeout is computed from.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field


class LeaseRefused(Exception):
    """The sandbox takes no new connections (it is being terminated)."""


@dataclass
class Lease:
    id: int
    sandbox_id: str
    kind: str  # pty | exec | tunnel | port
    opened_at: float
    last_seen: float
    last_active: float
    # Whether silence ends the lease; off for spliced connections whose
    # client protocol we do not speak (a forwarded WebSocket): the kernel's
    # TCP keepalive finds their vanished clients instead.
    keepalive: bool = True
    # Why the lease was ended from our side (expiry, force), for the client.
    ended_because: str | None = field(default=None)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "opened_at": self.opened_at, "last_active": self.last_active}


class LeaseTable:
    def __init__(self, keepalive_timeout: float, idle_timeout: float) -> None:
        self.keepalive_timeout = keepalive_timeout
        self.idle_timeout = idle_timeout
        self._ids = itertools.count(1)
        self._leases: dict[int, Lease] = {}
        self._by_sandbox: dict[str, set[int]] = {}
        self._draining: set[str] = set()
        self._last_activity: dict[str, float] = {}

    def open(self, sandbox_id: str, kind: str, now: float, *, keepalive: bool = True) -> Lease:
        if sandbox_id in self._draining:
            raise LeaseRefused(f"sandbox {sandbox_id} is being terminated")
        lease = Lease(
            next(self._ids), sandbox_id, kind, opened_at=now, last_seen=now, last_active=now, keepalive=keepalive
        )
        self._leases[lease.id] = lease
        self._by_sandbox.setdefault(sandbox_id, set()).add(lease.id)
        self.touch(sandbox_id, now)
        return lease

    def seen(self, lease_id: int, now: float) -> None:
        """The client is there (any frame, a ping included)."""
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.last_seen = max(lease.last_seen, now)

    def active(self, lease_id: int, now: float) -> None:
        """Real traffic went through the lease."""
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.last_seen = max(lease.last_seen, now)
            lease.last_active = max(lease.last_active, now)
            self.touch(lease.sandbox_id, now)

    def touch(self, sandbox_id: str, now: float) -> None:
        """Activity on the sandbox outside a lease (a file transfer, a one-shot exec)."""
        self._last_activity[sandbox_id] = max(self._last_activity.get(sandbox_id, now), now)

    def close(self, lease_id: int) -> Lease | None:
        lease = self._leases.pop(lease_id, None)
        if lease is not None:
            ids = self._by_sandbox[lease.sandbox_id]
            ids.discard(lease_id)
            if not ids:
                del self._by_sandbox[lease.sandbox_id]
        return lease

    def get(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def count(self, sandbox_id: str) -> int:
        return len(self._by_sandbox.get(sandbox_id, ()))

    def of(self, sandbox_id: str) -> list[Lease]:
        return [self._leases[i] for i in sorted(self._by_sandbox.get(sandbox_id, ()))]

    def last_activity(self, sandbox_id: str) -> float | None:
        """The most recent activity on the sandbox; a lease with traffic is activity until now."""
        return self._last_activity.get(sandbox_id)

    def expired(self, now: float) -> list[Lease]:
        """Leases to end now, each with ``ended_because`` set; they stay in the table until closed."""
        due = []
        for lease in self._leases.values():
            if lease.ended_because is not None:
                continue
            if lease.keepalive and now - lease.last_seen > self.keepalive_timeout:
                lease.ended_because = f"no keepalive from the client for {self.keepalive_timeout:g}s"
            elif now - lease.last_active > self.idle_timeout:
                lease.ended_because = f"no traffic but keepalives for {self.idle_timeout:g}s"
            else:
                continue
            due.append(lease)
        return due

    def drain(self, sandbox_id: str, reason: str) -> list[Lease]:
        """Refuse new leases on the sandbox; its open ones, marked to end with ``reason``."""
        self._draining.add(sandbox_id)
        leases = self.of(sandbox_id)
        for lease in leases:
            lease.ended_because = lease.ended_because or reason
        return leases

    def undrain(self, sandbox_id: str) -> None:
        """Accept leases again (a terminate that did not happen after all)."""
        self._draining.discard(sandbox_id)

    def forget(self, sandbox_id: str) -> None:
        """The sandbox is gone: nothing of it remains, not even its drain mark."""
        for lease_id in list(self._by_sandbox.get(sandbox_id, ())):
            self.close(lease_id)
        self._draining.discard(sandbox_id)
        self._last_activity.pop(sandbox_id, None)
