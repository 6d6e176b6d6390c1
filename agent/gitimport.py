"""Cloning a Git repository onto a workspace disk, with a token that stays secret.

The token travels as an ``Authorization`` header set through ``GIT_CONFIG_*``
environment variables: never on a command line (``ps`` shows those), never
in the clone's ``.git/config``, never in an error message. Git runs with no
system or user configuration, prompts off (a missing credential fails rather
than hangs), redirects not followed (the clone cannot be steered to another
host), only the URL's own protocol allowed, and no submodules.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import trio

# A transfer slower than this for this long is abandoned (bytes/s, seconds).
_LOW_SPEED = ("1000", "60")


class ImportFailed(Exception):
    """The clone failed; the message (git's own words) is safe to show."""


@dataclass(frozen=True)
class GitSource:
    url: str  # http(s) URL of the repository
    ref: str | None = None  # branch, tag or commit; the default branch if None
    token: str | None = field(default=None, repr=False)


def _environment(source: GitSource) -> dict[str, str]:
    config = {
        "http.followRedirects": "false",
        "http.lowSpeedLimit": _LOW_SPEED[0],
        "http.lowSpeedTime": _LOW_SPEED[1],
        "credential.helper": "",
        # The target belongs to the containers' range, not to the root running git.
        "safe.directory": "*",
    }
    if source.token:
        basic = base64.b64encode(f"x-access-token:{source.token}".encode()).decode()
        config["http.extraHeader"] = f"Authorization: Basic {basic}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": urlsplit(source.url).scheme,
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for i, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def _redacted(text: str, source: GitSource) -> str:
    if source.token:
        basic = base64.b64encode(f"x-access-token:{source.token}".encode()).decode()
        text = text.replace(source.token, "***").replace(basic, "***")
    return text


async def _git(source: GitSource, env: dict[str, str], *args: str) -> None:
    done = await trio.run_process(
        ["git", *args], env=env, stdin=b"", capture_stdout=True, capture_stderr=True, check=False
    )
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise ImportFailed(_redacted(lines[-1] if lines else f"git exited {done.returncode}", source))


async def clone_into(source: GitSource, target: Path) -> None:
    """Clone ``source`` into ``target``, the empty root of a fresh filesystem.

    The clone is the directory's whole content, so a session finds the
    repository at the workspace's root.
    """
    if urlsplit(source.url).scheme not in ("http", "https"):
        raise ImportFailed("only http(s) repository URLs are supported")
    env = _environment(source)
    checkout = [] if source.ref is None else ["--no-checkout"]
    await _git(source, env, "clone", "--quiet", *checkout, "--", source.url, str(target))
    if source.ref is not None:
        try:
            await _git(source, env, "-C", str(target), "checkout", "--quiet", source.ref)
        except ImportFailed:
            raise ImportFailed(f"ref {source.ref!r} not found in the repository") from None
