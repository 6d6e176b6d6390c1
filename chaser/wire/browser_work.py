"""What browser jobs ask of a browser: CDP calls to run in order, or a page to scrape.

These shapes travel unchanged from ``POST /v1/jobs`` (``browser.action``,
``browser.scrape``) through the scheduler to the agent that runs the
session's Chromium, so both validate with the same models, and the JSON
Schema ``GET /v1/jobs/kinds`` publishes is theirs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TIMEOUT_MS = 600_000

Format = Literal["text", "html"]


def _text_only() -> list[Format]:
    return ["text"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CdpCall(_Strict):
    """One DevTools protocol command, as Chromium's protocol documents it."""

    method: str = Field(pattern=r"^[A-Za-z]+\.[A-Za-z]+$", max_length=128, examples=["Page.navigate"])
    params: dict[str, Any] = Field(default_factory=dict)
    target: str = Field(
        default="page",
        min_length=1,
        max_length=128,
        description='"page": the job\'s page (its first tab); "browser": the browser itself (Target.*, '
        "Browser.*); or a target id, attached to on first use",
    )
    session_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="a CDP session id from an earlier step (overrides target)",
    )


class CdpCalls(_Strict):
    calls: list[CdpCall] = Field(min_length=1, max_length=1000)
    timeout_ms: int = Field(default=60_000, gt=0, le=MAX_TIMEOUT_MS, description="for all the calls together")


class ScrapeRequest(_Strict):
    """A page to load and what to take from it."""

    url: str = Field(pattern=r"^(?i:https?)://[^\s]+$", max_length=8192)
    selector: str | None = Field(
        default=None, min_length=1, max_length=4096, description="CSS selector; without one, the whole page"
    )
    wait_until: Literal["load", "domcontentloaded", "networkidle"] = "load"
    wait_for_selector: bool = Field(default=False, description="also wait until the selector matches something")
    timeout_ms: int = Field(default=30_000, gt=0, le=MAX_TIMEOUT_MS, description="for loading and waiting")
    formats: list[Format] = Field(
        default_factory=_text_only, min_length=1, max_length=2, description="what to extract per element"
    )
    screenshot: bool = Field(default=False, description="a PNG of the page, base64, in the result")
    full_page: bool = Field(default=False, description="the screenshot covers the whole page, not the viewport")
