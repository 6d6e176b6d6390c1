"""Image recipes: what goes into each named root filesystem.

A recipe is pure data. Its digest names the built tree on disk, so changing a
recipe (or the builder's own behaviour, via BUILDER_VERSION) builds a new
tree instead of silently reusing an old one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Bump when build.py changes what it produces from the same recipe.
BUILDER_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """A Debian root filesystem built by debootstrap."""

    name: str
    suite: str
    variant: str
    packages: tuple[str, ...]
    # Installed with apt-get inside the new tree: debootstrap's own resolver
    # cannot follow virtual packages (npm's dependencies need that).
    apt_packages: tuple[str, ...] = ()

    def digest(self) -> str:
        """Stable hash of everything that shapes the built tree."""
        material = json.dumps({"recipe": asdict(self), "builder": BUILDER_VERSION}, sort_keys=True)
        return hashlib.sha256(material.encode()).hexdigest()

    @property
    def slug(self) -> str:
        """File-system-safe form of the name, for directory names."""
        return self.name.replace(":", "_").replace("/", "_")


DEBIAN_BOOKWORM = Recipe(
    name="debian:bookworm",
    suite="bookworm",
    variant="minbase",
    packages=(
        "bash",
        "coreutils",
        "ca-certificates",
        "curl",
        "git",
        "procps",
        "python3",
        "nodejs",
    ),
    apt_packages=("npm",),
)

# What browser sessions boot: Debian's Chromium, with fonts enough to render
# Latin, Greek, Cyrillic and the scripts Noto covers the way users expect.
# No image is ever named in a browser session's create (the seeds forbid it):
# the scheduler picks this one by its alias.
DEBIAN_BOOKWORM_CHROMIUM = Recipe(
    name="debian:bookworm-chromium",
    suite="bookworm",
    variant="minbase",
    packages=("bash", "coreutils", "ca-certificates", "curl", "procps"),
    apt_packages=("chromium", "fonts-liberation", "fonts-dejavu-core", "fonts-noto-core"),
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (DEBIAN_BOOKWORM, DEBIAN_BOOKWORM_CHROMIUM)}

# Names users may write instead of a recipe's own name.
ALIASES: dict[str, str] = {"default": DEBIAN_BOOKWORM.name, "browser": DEBIAN_BOOKWORM_CHROMIUM.name}


def resolve(name: str) -> Recipe | None:
    """The recipe a user-facing image name refers to, or None."""
    return RECIPES.get(ALIASES.get(name, name))
