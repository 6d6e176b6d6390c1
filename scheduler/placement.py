"""Placement: which host runs a new session.

A pure function over a snapshot of the hosts, so it is tested without any
host. Best fit: among the hosts that can run the session, the one with the
fewest free slots left, which keeps whole hosts free for big requests and
lets idle ones be drained. Ties go to the lowest id, for determinism.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chaser.isolation import Limits


@dataclass(frozen=True)
class HostLoad:
    id: str
    url: str
    session_types: frozenset[str]
    images: frozenset[str]
    max_sandboxes: int
    active: int
    healthy: bool
    egress: bool = False  # its sessions can reach outside networks
    max_limits: Limits | None = None  # None: no host maxima reported

    def fits(self, limits: Limits | None) -> bool:
        return limits is None or self.max_limits is None or not limits.exceeding(self.max_limits)

    @property
    def free(self) -> int:
        return self.max_sandboxes - self.active


def candidates(
    hosts: Sequence[HostLoad],
    session_type: str,
    image: str | None,
    *,
    needs_egress: bool = False,
    limits: Limits | None = None,
) -> list[HostLoad]:
    """Hosts able to take the session, best fit first."""
    fitting = [
        h
        for h in hosts
        if h.healthy
        and session_type in h.session_types
        and (image is None or image in h.images)
        and h.free > 0
        and (h.egress or not needs_egress)
        and h.fits(limits)
    ]
    return sorted(fitting, key=lambda h: (h.free, h.id))
