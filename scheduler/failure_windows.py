"""Anonymous authentication failures, counted per source address and window.

Every refused call is audited, but a flood of anonymous 401s must not write
one row each into the append-only audit table (an unauthenticated client
could grow it without bound). The first anonymous failure from an address
is written at once; the others in the same window are only counted, and one
row carrying their number (``occurrences``) is written once the window is
over. The number of addresses tracked at once is bounded: past it, the
excess is counted under no address.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Window:
    """One address's current window: when it opened, and the failures not yet written."""

    opened_at: float
    pending: int = 0
    last_at: float = 0.0
    method: str = ""
    path: str = ""


@dataclass(frozen=True)
class Summary:
    """The failures of a closed window that were counted instead of written."""

    address: str | None
    occurrences: int
    last_at: float
    method: str
    path: str


class FailureWindows:
    def __init__(self, window: float = 60.0, max_addresses: int = 10_000) -> None:
        self.window = window
        self.max_addresses = max_addresses
        self._open: dict[str | None, Window] = {}
        self._closed: list[Summary] = []

    def note(self, address: str | None, now: float, method: str, path: str) -> bool:
        """Count one failure; True if it opens a window (and is to be written now)."""
        if address not in self._open and len(self._open) >= self.max_addresses:
            address = None
        current = self._open.get(address)
        if current is not None and now - current.opened_at < self.window:
            current.pending += 1
            current.last_at, current.method, current.path = now, method, path
            return False
        if current is not None and current.pending:
            self._closed.append(self._summary(address, current))
        self._open[address] = Window(opened_at=now)
        return True

    def closed(self, now: float) -> list[Summary]:
        """The summaries of windows over by ``now``, forgotten once returned."""
        done, self._closed = self._closed, []
        for address, current in list(self._open.items()):
            if now - current.opened_at >= self.window:
                del self._open[address]
                if current.pending:
                    done.append(self._summary(address, current))
        return done

    @staticmethod
    def _summary(address: str | None, current: Window) -> Summary:
        return Summary(address, current.pending, current.last_at, current.method, current.path)
