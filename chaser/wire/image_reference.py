"""OCI image references as Docker reads them: ``node:20`` is ``docker.io/library/node:20``.

Shared by the scheduler (which host may already hold an image), the agent
(what to pull) and the CLI. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_PORT = r"(?::[0-9]{1,5})?"
_DOMAIN = re.compile(rf"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.?)+{_PORT}|\[[0-9a-fA-F:]+\]{_PORT}")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_MAX_LENGTH = 255


class BadReference(ValueError):
    """Not an image reference."""


@dataclass(frozen=True)
class ImageReference:
    domain: str  # "docker.io", "ghcr.io", "127.0.0.1:5000"
    path: str  # "library/node", "org/app"
    tag: str | None  # None only when a digest pins it
    digest: str | None = None  # "sha256:<hex>"

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        """The canonical form: every part spelled out."""
        text = self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def pinned(self, digest: str) -> ImageReference:
        """The same image by digest (what a session records it ran)."""
        return ImageReference(self.domain, self.path, self.tag, digest)

    @property
    def by_digest(self) -> str:
        """``repository@digest``: the one form a registry never moves."""
        assert self.digest is not None
        return f"{self.repository}@{self.digest}"

    @property
    def on_loopback(self) -> bool:
        """A registry on this machine: plain HTTP is allowed there, as Docker does."""
        host = self.domain.rsplit(":", 1)[0] if not self.domain.startswith("[") else self.domain.split("]")[0][1:]
        return host == "localhost" or host.startswith("127.") or host == "::1"


def parse_reference(text: str) -> ImageReference:
    """Parse with Docker's rules; raises ``BadReference`` saying what is wrong."""
    if not text or len(text) > _MAX_LENGTH:
        raise BadReference(f"an image reference has 1 to {_MAX_LENGTH} characters")
    rest, _, digest = text.partition("@")
    if digest and not DIGEST.fullmatch(digest):
        raise BadReference(f"{digest!r} is not a sha256 digest (sha256:<64 hex digits>)")
    tag: str | None = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise BadReference(f"{tag!r} is not a valid tag")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not _DOMAIN.fullmatch(first):
            raise BadReference(f"{first!r} is not a registry host name")
        domain, path = first, remainder
    else:
        domain, path = DOCKER_HUB, rest
    if domain in (DOCKER_HUB, "index.docker.io", "registry-1.docker.io"):
        domain = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if not _PATH.fullmatch(path):
        raise BadReference(f"{path!r} is not a repository name (lowercase letters, digits and separators)")
    if tag is None and not digest:
        tag = "latest"
    return ImageReference(domain=domain, path=path, tag=tag, digest=digest or None)
