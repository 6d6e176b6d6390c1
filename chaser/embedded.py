"""Embedded single-host mode, as the CLI sees it: where its files are, what they hold.

Scheduler and agent run in one process on this machine (``serving.embedded``,
imported only by ``chaser up``). State lives under one directory
(``/var/lib/chaser/embedded`` by default): the SQLite store, the agent's
sandboxes, the credentials (host token and the first user's API key, kept so
that the next ``chaser up`` prints the same key) and, while running, a pid
file and a ready file. Sandboxes are destroyed when the process stops:
``chaser down`` leaves nothing running.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/chaser/embedded")
DEFAULT_IMAGES_DIR = Path("/var/lib/chaser/images")
DEFAULT_PORT = 8420


@dataclass(frozen=True)
class Credentials:
    token: str
    api_key: str


@dataclass(frozen=True)
class Paths:
    state_dir: Path

    @property
    def credentials(self) -> Path:
        return self.state_dir / "credentials.json"

    @property
    def pid(self) -> Path:
        return self.state_dir / "chaser.pid"

    @property
    def ready(self) -> Path:
        return self.state_dir / "ready.json"

    @property
    def log(self) -> Path:
        return self.state_dir / "chaser.log"


def read_credentials(paths: Paths) -> Credentials:
    """The credentials a running (or once run) embedded system saved."""
    data = json.loads(paths.credentials.read_text())
    return Credentials(token=data["token"], api_key=data["api_key"])


def exports(api_url: str, creds: Credentials) -> str:
    """Shell lines that point the CLI and curl examples here."""
    return f"export CHASER_API_URL={api_url}\nexport CHASER_API_KEY={creds.api_key}\n"
