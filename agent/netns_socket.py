"""Sockets created inside another network namespace, without touching its network.

A socket belongs to the namespace it was created in for its whole life. So
a worker thread briefly enters the sandbox's namespace (``setns`` acts on
the calling thread only), creates the socket and returns to its own; the
agent then connects it on the trio loop. This reaches a port on the
sandbox's loopback while the host and the sandbox stay unconnected.

Blocking (and thread-affine): call through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import ctypes
import os
import socket

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def tcp_socket_in(netns_fd: int) -> socket.socket:
    """A new, unconnected TCP socket in the network namespace ``netns_fd``."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(netns_fd)
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            # Failing to return would leave a pool thread in the sandbox's
            # namespace, where later work would silently run: stop instead.
            try:
                _setns(own)
            except OSError:  # pragma: no cover - only on a kernel failure
                os.abort()
    finally:
        os.close(own)
