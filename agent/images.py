"""Which images this host can start sessions from, by user-facing name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import vmimages
from chaser import errors


@dataclass(frozen=True)
class Image:
    name: str  # canonical name, e.g. "debian:bookworm"
    rootfs: Path


class ImageStore:
    """Resolves names (and aliases like ``default``) to built root filesystems.

    Only images already built on this host count: building one takes a
    minute, far too long to do inside a session create.
    """

    def __init__(self, images_dir: Path) -> None:
        self.images_dir = images_dir

    def names(self) -> list[str]:
        """Every name that resolves here, aliases included."""
        built = [r.name for r in vmimages.RECIPES.values() if vmimages.is_built(self.images_dir, r)]
        aliases = [alias for alias, target in vmimages.ALIASES.items() if target in built]
        return sorted(built + aliases)

    def resolve(self, name: str) -> Image:
        recipe = vmimages.resolve(name)
        if recipe is None or not vmimages.is_built(self.images_dir, recipe):
            raise errors.InvalidInput(
                f"unknown image {name!r}; available: {', '.join(self.names()) or 'none'}",
                code="unknown_image",
            )
        return Image(name=recipe.name, rootfs=vmimages.image_dir(self.images_dir, recipe) / "rootfs")
