"""Network namespace chores done with pyroute2 (blocking: call from a thread)."""

from __future__ import annotations

from pyroute2 import IPRoute

_LOOPBACK_INDEX = 1


def bring_up_loopback(pid: int) -> None:
    """Set ``lo`` up in the network namespace of ``pid``.

    A container created with an empty network has ``lo`` down, and then
    nothing listening on 127.0.0.1 inside it is reachable.
    """
    with IPRoute(netns=f"/proc/{pid}/ns/net", flags=0) as ipr:
        ipr.link("set", index=_LOOPBACK_INDEX, state="up")
