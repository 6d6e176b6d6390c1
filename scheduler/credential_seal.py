"""Sealing secrets at rest: AES-256-GCM under a key derived from the scheduler's configuration.

A registry password must be usable (sent to a host for a pull), so it
cannot be hashed; it is encrypted instead. The configured secret (32
random bytes or more, as the cluster token) is stretched by HKDF-SHA256
into the AES key, so any strong string works and the key is never the
configured text itself. Each sealed value has its own random 96-bit nonce
and is bound, as associated data, to what it belongs to (its account,
registry and user name): a row copied to another account, or edited in
the database, no longer opens. A database dump without the key reveals
no password.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1."
_NONCE = 12
_INFO = b"chaser registry credentials v1"


class SealBroken(Exception):
    """A sealed value did not open: another key, or not what it was sealed for."""


class Sealer:
    def __init__(self, secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "Sealer(***)"

    def seal(self, plaintext: str, bound_to: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), bound_to.encode())
        return _VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, bound_to: str) -> str:
        if not sealed.startswith(_VERSION):
            raise SealBroken("unknown seal format")
        try:
            raw = base64.urlsafe_b64decode(sealed.removeprefix(_VERSION))
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], bound_to.encode()).decode()
        except (ValueError, InvalidTag):
            raise SealBroken("the sealed value does not open with this key") from None
