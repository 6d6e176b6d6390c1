"""Replacing a small state file whole, for the runtimes' records beside their sandboxes."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s contents whole: a crash leaves the old or the new, never half."""
    staged = path.with_name(path.name + ".partial")
    staged.write_text(text)
    os.replace(staged, path)
