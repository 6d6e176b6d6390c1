"""Where webhook deliveries may go: guard against a tenant aiming us at internal services.

With ``webhook_block_private_networks`` on (the default), a webhook URL may
not point at loopback, private, link-local (cloud metadata), multicast or
reserved addresses, except the ranges the operator lists in
``webhook_allowed_networks``: checked on the literal address when the
webhook is saved, and on every resolved address before each delivery. The
delivery then connects to an address this check passed and to no other
(``PinnedBackend``), so a name that resolves differently the second time (DNS
rebinding) changes nothing. Single-machine setups that deliver to a local
receiver turn the setting off or allow that range.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedDestination(Exception):
    pass


@dataclass(frozen=True)
class DestinationPolicy:
    block_private: bool
    allowed: Sequence[Network] = ()

    def blocked(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not self.block_private or any(address in network for network in self.allowed):
            return False
        return not address.is_global or address.is_multicast

    def check_url(self, url: str) -> None:
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
        try:
            literal = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return
        if self.blocked(literal):
            raise ValueError(f"deliveries to {literal} are not allowed (private or reserved address)")

    async def resolve(self, url: str) -> list[str]:
        """The URL's host resolved once, every address vetted; ``BlockedDestination`` if any is blocked."""
        parts = urlsplit(url)
        assert parts.hostname is not None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await trio.socket.getaddrinfo(parts.hostname, port, type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            raise BlockedDestination(f"cannot resolve {parts.hostname}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
        for address in addresses:
            if self.blocked(ipaddress.ip_address(address)):
                raise BlockedDestination(f"{parts.hostname} resolves to {address}, which is not a public address")
        if not addresses:
            raise BlockedDestination(f"{parts.hostname} resolves to no address")
        return addresses
