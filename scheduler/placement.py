"""Placement: which host runs a new session.

A pure function over a snapshot of the hosts, so it is tested without any
host. Best fit: among the hosts that can run the session, the one with the
fewest free slots left, which keeps whole hosts free for big requests and
lets idle ones be drained. Ties go to the lowest id, for determinism.

A registry image (any OCI reference) runs on every host that pulls images;
a host already holding it comes first, as a pull is the slowest part of a
create.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chaser.wire.image_reference import BadReference, parse_reference
from chaser.wire.isolation import Limits


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
    pulls_images: bool = False  # it runs registry images, pulled on first use
    registry_images: frozenset[str] = frozenset()  # canonical references of those it holds

    def runs(self, image: str | None) -> bool:
        return image is None or image in self.images or (self.pulls_images and registry_reference(image) is not None)

    def holds(self, image: str | None) -> bool:
        return image is None or image in self.images or registry_reference(image) in self.registry_images

    def fits(self, limits: Limits | None) -> bool:
        return limits is None or self.max_limits is None or not limits.exceeding(self.max_limits)

    @property
    def free(self) -> int:
        return self.max_sandboxes - self.active


def registry_reference(image: str) -> str | None:
    """The canonical form of ``image`` as a registry reference (``node:20`` is
    ``docker.io/library/node:20``), or None if it is not one."""
    try:
        return str(parse_reference(image))
    except BadReference:
        return None


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
        and h.runs(image)
        and h.free > 0
        and (h.egress or not needs_egress)
        and h.fits(limits)
    ]
    return sorted(fitting, key=lambda h: (not h.holds(image), h.free, h.id))
