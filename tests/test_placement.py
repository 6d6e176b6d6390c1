"""Placement is a pure function: best fit among the hosts able to run the session."""

from __future__ import annotations

import pytest

from scheduler.placement import HostLoad, candidates

pytestmark = pytest.mark.fast


def host(
    id: str, *, active: int, max_sandboxes: int = 10, healthy: bool = True, images: tuple[str, ...] = ("default",)
) -> HostLoad:
    return HostLoad(
        id=id,
        url=f"http://{id}",
        session_types=frozenset({"sandbox"}),
        images=frozenset(images),
        max_sandboxes=max_sandboxes,
        active=active,
        healthy=healthy,
    )


def test_best_fit_prefers_the_fullest_host_that_fits() -> None:
    hosts = [host("a", active=2), host("b", active=8), host("c", active=5)]
    assert [h.id for h in candidates(hosts, "sandbox", "default")] == ["b", "c", "a"]


def test_full_unhealthy_and_unable_hosts_are_skipped() -> None:
    hosts = [
        host("full", active=10),
        host("down", active=0, healthy=False),
        host("no-image", active=0, images=("other",)),
        host("ok", active=3),
    ]
    assert [h.id for h in candidates(hosts, "sandbox", "default")] == ["ok"]
    assert candidates(hosts, "browser", None) == []


def test_ties_break_by_id_for_determinism() -> None:
    assert [h.id for h in candidates([host("z", active=1), host("y", active=1)], "sandbox", "default")] == ["y", "z"]


def test_a_host_already_holding_a_registry_image_comes_first() -> None:
    """Pulling is the slowest part of a create: the host with the image wins over a better fit."""

    def puller(id: str, active: int, held: tuple[str, ...] = ()) -> HostLoad:
        base = host(id, active=active)
        return HostLoad(**{**base.__dict__, "pulls_images": True, "registry_images": frozenset(held)})

    hosts = [
        puller("fuller", active=8),
        puller("holder", active=1, held=("docker.io/library/node:20",)),
        host("builtin-only", active=0),
    ]
    # Docker's short name is read as the canonical reference the host reports.
    assert [h.id for h in candidates(hosts, "sandbox", "node:20")] == ["holder", "fuller"]
    assert [h.id for h in candidates(hosts, "sandbox", "ghcr.io/org/app:1")] == ["fuller", "holder"]
    assert [h.id for h in candidates(hosts, "sandbox", "default")] == ["fuller", "holder", "builtin-only"]
