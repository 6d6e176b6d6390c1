"""``chaser browser``: what CDP clients need to drive a browser session.

chaser browser cdp-url SESSION    # ws://.../s/SESSION/t/<token>/devtools/browser/<id>

The URL carries a session token (15 minutes unless ``--ttl-seconds``), so
``puppeteer.connect({browserWSEndpoint})`` and the like need nothing else.
"""

from __future__ import annotations

import argparse
from typing import Any

from chaser.client import Client


def cmd_browser(args: argparse.Namespace) -> int:
    with Client() as client:
        print(client.cdp_url(args.session, args.ttl_seconds))
    return 0


def add_browser_commands(sub: Any) -> None:
    """Add ``browser`` to the CLI's subcommands."""
    browser = sub.add_parser("browser", help="drive browser sessions over CDP")
    actions = browser.add_subparsers(dest="action", required=True)
    cdp_url = actions.add_parser("cdp-url", help="print a connectable CDP WebSocket URL (with a session token)")
    cdp_url.add_argument("session")
    cdp_url.add_argument("--ttl-seconds", type=int, help="how long the URL works (default 900)")
    browser.set_defaults(func=cmd_browser)
