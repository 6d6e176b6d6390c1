"""Which images this host can start sessions from, by user-facing name."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import vmimages
from chaser import errors


@dataclass(frozen=True)
class Image:
    name: str  # canonical name, e.g. "debian:bookworm"
    # A root filesystem tree (lxc), or a VM image's read-only disk with its
    # kernel and initramfs beside it (qemu): see ``vmimages.root_of``.
    rootfs: Path
    runtime: str = "lxc"


class ImageStore:
    """Resolves names (and aliases like ``default``) to built images.

    Only images already built on this host, for a runtime this agent runs,
    count: building one takes a minute, far too long to do inside a session
    create. A runtime in ``refused`` runs (its sandboxes are kept) but takes
    no new ones: its images are not offered, and asking for one says why.
    """

    def __init__(
        self,
        images_dir: Path,
        runtimes: Collection[str] = ("lxc",),
        aliases: Mapping[str, str] | None = None,
        refused: Mapping[str, str] | None = None,
    ) -> None:
        self.images_dir = images_dir
        self.runtimes = runtimes
        # The operator's names first resolve to an image name, then as usual.
        self.aliases = dict(aliases or {})
        self.refused = dict(refused or {})

    def _usable(self, recipe: vmimages.AnyRecipe) -> bool:
        return (
            recipe.runtime in self.runtimes
            and recipe.runtime not in self.refused
            and vmimages.is_built(self.images_dir, recipe)
        )

    def names(self) -> list[str]:
        """Every name that resolves here, aliases included."""
        usable = [r.name for r in vmimages.RECIPES.values() if self._usable(r)]
        aliases = [alias for alias, target in vmimages.ALIASES.items() if target in usable]
        operators = [
            alias for alias, target in self.aliases.items() if getattr(vmimages.resolve(target), "name", None) in usable
        ]
        return sorted(usable + aliases + operators)

    def resolve(self, name: str) -> Image:
        recipe = vmimages.resolve(self.aliases.get(name, name))
        if recipe is not None and recipe.runtime in self.refused and vmimages.is_built(self.images_dir, recipe):
            raise errors.InvalidInput(
                f"image {name!r} needs the {recipe.runtime} runtime, which takes no new sessions on this host: "
                f"{self.refused[recipe.runtime]}",
                code="image_unavailable",
            )
        if recipe is None or not self._usable(recipe):
            raise errors.InvalidInput(
                f"unknown image {name!r}; available: {', '.join(self.names()) or 'none'}",
                code="unknown_image",
            )
        return Image(name=recipe.name, rootfs=vmimages.root_of(self.images_dir, recipe), runtime=recipe.runtime)
