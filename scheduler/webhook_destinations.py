"""Where webhook deliveries may go: guard against a tenant aiming us at internal services.

With ``webhook_block_private_networks`` on (the default), a webhook URL may
not point at loopback, private, link-local (cloud metadata), multicast or
reserved addresses: checked on the literal address when the webhook is
saved, and on every resolved address before each delivery. (A name that
resolves differently between our check and the connection is not caught;
pin receivers by address if that matters.) Single-machine setups that
deliver to a local receiver turn the setting off.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import trio


class BlockedDestination(Exception):
    pass


def _blocked(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def check_url(url: str, block_private: bool) -> None:
    """Refuse (``ValueError``) a URL that is not http(s) or names a blocked literal address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not accepted; authenticate with the signature")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("the port is not a number from 0 to 65535") from None
    if block_private:
        try:
            literal = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return
        if _blocked(literal):
            raise ValueError(f"deliveries to {literal} are not allowed (private or reserved address)")


async def check_resolved(url: str) -> None:
    """Resolve the URL's host; raise ``BlockedDestination`` if any address is not public."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await trio.socket.getaddrinfo(parts.hostname, port, type=trio.socket.SOCK_STREAM)
    except OSError as exc:
        raise BlockedDestination(f"cannot resolve {parts.hostname}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if _blocked(address):
            raise BlockedDestination(f"{parts.hostname} resolves to {address}, which is not a public address")
