"""How Chromium is started inside a session: its command line and profile place.

Pure data, shared by every runtime. The flags are those headless Chromium
needs as root on a host without a desktop (no sandbox of its own: the
session is the sandbox) and on a closed network (no background calls home,
no QUIC, no component updates).
"""

from __future__ import annotations

import shlex

from agent.runtimes.base import WORKSPACE_MOUNT

# The image browser sessions boot (an alias of the recipe with Chromium).
BROWSER_IMAGE = "browser"
# Where DevTools listens, on the session's own loopback only.
DEVTOOLS_PORT = 9222
# A workspace-backed browser keeps its profile (cookies, local storage,
# logins) on the workspace disk; an ephemeral one in the session's tmpfs.
WORKSPACE_PROFILE = f"{WORKSPACE_MOUNT}/chromium-profile"
EPHEMERAL_PROFILE = "/tmp/chromium-profile"

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    f"--remote-debugging-port={DEVTOOLS_PORT}",
    # Clients that send an Origin (a DevTools front end in a web page) are
    # refused by default; only the session's own proxy can reach this port.
    "--remote-allow-origins=*",
)


def profile_dir(on_workspace: bool) -> str:
    return WORKSPACE_PROFILE if on_workspace else EPHEMERAL_PROFILE


def launch_argv(on_workspace: bool) -> list[str]:
    """The command that starts Chromium in a session.

    A workspace is attached to one session at a time, so a lock left in the
    profile by a Chromium that was killed (rather than closed) is stale:
    Chromium would take it for another computer's and refuse the profile.
    """
    profile = profile_dir(on_workspace)
    chromium = shlex.join(["chromium", *FLAGS, f"--user-data-dir={profile}", "about:blank"])
    script = f"mkdir -p {profile} && rm -f {profile}/Singleton* && exec {chromium}"
    return ["/bin/sh", "-c", script]
