"""Sealing secrets at rest: AES-256-GCM under a key derived from the scheduler's configuration.

A registry password must be usable (sent to a host for a pull), so it
cannot be hashed; it is encrypted instead. The configured secret (32
random bytes or more, as the cluster token) is stretched by HKDF-SHA256
into the AES key, so any strong string works and the key is never the
configured text itself. Each sealed value has its own random 96-bit nonce
and is bound, as associated data, to what it belongs to (its account,
registry and user name): a row copied to another account, or edited in
the database, no longer opens. A database dump without the key reveals
no password. A key is rotated by moving it to the previous keys and
setting a new one: each login is sealed anew under the new key when next
used, and the old key can go once every login has been.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1."
_NONCE = 12
_INFO = b"chaser registry credentials v1"


class SealBroken(Exception):
    """A sealed value did not open: another key, or not what it was sealed for."""


@dataclass(frozen=True)
class Opened:
    plaintext: str
    by_previous_key: bool  # sealed under a key being rotated out: seal it anew

    def __repr__(self) -> str:
        return f"Opened(***, by_previous_key={self.by_previous_key})"


def _aead(secret: str) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode()))


class Sealer:
    """Seals with the current key; opens with it or, during a rotation, with the previous ones."""

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        self._aead = _aead(secret)
        self._previous = [_aead(old) for old in previous]

    def __repr__(self) -> str:
        return "Sealer(***)"

    def seal(self, plaintext: str, bound_to: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), bound_to.encode())
        return _VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, bound_to: str) -> Opened:
        if not sealed.startswith(_VERSION):
            raise SealBroken("unknown seal format")
        try:
            raw = base64.urlsafe_b64decode(sealed.removeprefix(_VERSION))
        except ValueError:
            raise SealBroken("the sealed value is not base64") from None
        for index, aead in enumerate([self._aead, *self._previous]):
            try:
                plaintext = aead.decrypt(raw[:_NONCE], raw[_NONCE:], bound_to.encode()).decode()
            except (ValueError, InvalidTag):
                continue
            return Opened(plaintext, by_previous_key=index > 0)
        raise SealBroken("the sealed value does not open with any configured key")
