"""Browser sessions: Chromium inside a sandbox, driven over the DevTools protocol.

``Browsers`` starts and stops each session's Chromium; ``open_cdp`` speaks
CDP to it through the runtime's ``open_port``, which is what the job routes
(``run_actions``, ``scrape``) build on.
"""

from agent.browser.browsers import Browsers
from agent.browser.cdp import CdpConnection, CdpError, open_cdp

__all__ = ["Browsers", "CdpConnection", "CdpError", "open_cdp"]
