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
