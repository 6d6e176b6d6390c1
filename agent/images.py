"""Which images this host can start sessions from, by user-facing name."""

from __future__ import annotations

from collections.abc import Mapping
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

    def __init__(self, images_dir: Path, aliases: Mapping[str, str] | None = None) -> None:
        self.images_dir = images_dir
        # The operator's names first resolve to an image name, then as usual.
        self.aliases = dict(aliases or {})

    def names(self) -> list[str]:
        """Every name that resolves here, aliases included."""
        built = [r.name for r in vmimages.RECIPES.values() if vmimages.is_built(self.images_dir, r)]
        aliases = [alias for alias, target in vmimages.ALIASES.items() if target in built]
        operators = [
            alias for alias, target in self.aliases.items() if getattr(vmimages.resolve(target), "name", None) in built
        ]
        return sorted(built + aliases + operators)

    def resolve(self, name: str) -> Image:
        recipe = vmimages.resolve(self.aliases.get(name, name))
        if recipe is None or not vmimages.is_built(self.images_dir, recipe):
            raise errors.InvalidInput(
                f"unknown image {name!r}; available: {', '.join(self.names()) or 'none'}",
                code="unknown_image",
            )
        return Image(name=recipe.name, rootfs=vmimages.image_dir(self.images_dir, recipe) / "rootfs")
