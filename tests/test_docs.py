"""The repository's documents stand alone and stay true to the code they describe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.config import AgentConfig, LimitsConfig, NetworkConfig
from scheduler.config import SchedulerConfig

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_links_stay_inside_the_repository(document: Path) -> None:
    for target in LINK.findall(document.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue
        path = (document.parent / target).resolve()
        assert path.is_relative_to(ROOT), f"{document.name} links outside the repository: {target}"
        assert path.exists(), f"{document.name} links to a missing file: {target}"


def test_every_configuration_key_is_documented() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    keys = [
        *SchedulerConfig.model_fields,
        *(name for name in AgentConfig.model_fields if name not in ("network", "limits")),
        *(f"network.{name}" for name in NetworkConfig.model_fields),
        *(f"limits.{name}" for name in LimitsConfig.model_fields),
    ]
    missing = [key for key in keys if f"`{key}`" not in operations]
    assert missing == [], f"docs/operations.md does not describe {missing}"
