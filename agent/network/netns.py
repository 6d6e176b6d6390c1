"""Network namespace chores (blocking: call from a thread).

Done from the calling thread, which enters the namespace with setns(2) just
long enough to open a socket there (``setns`` acts on the calling thread
only, and a socket belongs to the namespace it was made in for its whole
life). Not with pyroute2's ``netns=``: that
forks a child which runs Python in this heavily threaded process, and such
a child can deadlock on a lock another thread held at the fork (a sandbox
create then hangs for good).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: the name, then ifr_flags, padded to 40 bytes

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _socket_in(pid: int) -> socket.socket:
    """A socket in the network namespace of ``pid``; this thread is back in its own after."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        finally:
            _setns(own)
    finally:
        os.close(own)


def bring_up_loopback(pid: int) -> None:
    """Set ``lo`` up in the network namespace of ``pid``.

    A container created with an empty network has ``lo`` down, and then
    nothing listening on 127.0.0.1 inside it is reachable.
    """
    with _socket_in(pid) as sock:
        current = fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
        flags = struct.unpack(_IFREQ, current)[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


@contextlib.contextmanager
def entered(netns_fd: int) -> Iterator[None]:
    """This thread in the network namespace ``netns_fd`` for the block, then back in its own.

    Sockets (netlink ones included) made in the block belong to that
    namespace for good, and can be used after it.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(netns_fd)
        try:
            yield
        finally:
            # Failing to return would leave a pool thread in another
            # namespace, where later work would silently run: stop instead.
            try:
                _setns(own)
            except OSError:  # pragma: no cover - only on a kernel failure
                os.abort()
    finally:
        os.close(own)


@contextlib.contextmanager
def entered_path(path: Path) -> Iterator[None]:
    """``entered`` for a named namespace (``/run/netns/<name>``)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            yield
    finally:
        os.close(fd)


def tcp_socket_in(netns_fd: int) -> socket.socket:
    """A new, unconnected TCP socket in the network namespace ``netns_fd``.

    The agent connects it to a port on the sandbox's loopback: only the
    agent can reach there, the host and the sandbox stay unconnected.
    """
    with entered(netns_fd):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def unix_socket_in(netns_fd: int) -> socket.socket:
    """A new unix socket of the network namespace ``netns_fd``: abstract names are looked up there
    (the agent reaches a container's in-sandbox agent this way, no path of the sandbox involved)."""
    with entered(netns_fd):
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
