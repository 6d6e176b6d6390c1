"""Which images this host can start sessions from, by user-facing name.

Built-in images (``vmimages`` recipes, and the operator's aliases of them)
are looked up by name; any other name is an OCI reference (``node:20``,
``ghcr.io/org/app:tag``) pulled into the host's layer store.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import vmimages
from agent.registry.skopeo import Credentials
from agent.registry.store import LayerStore
from chaser.wire import errors
from chaser.wire.image_reference import BadReference, parse_reference


@dataclass(frozen=True)
class Image:
    name: str  # canonical name, e.g. "debian:bookworm"
    # A root filesystem tree (lxc), or a VM image's read-only disk with its
    # kernel and initramfs beside it (qemu): see ``vmimages.root_of``.
    rootfs: Path
    runtime: str = "lxc"
    # A registry image: its unpacked layers (top first, as overlay stacks
    # them, already owned by the containers' ids), the digest its reference
    # resolved to, and its config's defaults for every process.
    layers: tuple[Path, ...] = ()
    digest: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None


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
        registry: LayerStore | None = None,
    ) -> None:
        self.images_dir = images_dir
        self.runtimes = runtimes
        # The operator's names first resolve to an image name, then as usual.
        self.aliases = dict(aliases or {})
        self.refused = dict(refused or {})
        # Without it, only built-in images are offered.
        self.registry = registry

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

    def registry_references(self) -> list[str]:
        """Every reference (by tag and by digest) of the images in the layer store."""
        if self.registry is None:
            return []
        found = set()
        for image in self.registry.images():
            for reference in map(parse_reference, image.references):
                found |= {str(reference), f"{reference.repository}@{image.digest}"}
        return sorted(found)

    def is_builtin(self, name: str) -> bool:
        return vmimages.resolve(self.aliases.get(name, name)) is not None

    async def find(self, name: str, credentials: Credentials | None = None, account: str | None = None) -> Image:
        """A built-in image by name, or a registry image by reference (pulled if the store lacks it)."""
        if self.registry is None or self.is_builtin(name):
            return self.resolve(name)
        try:
            reference = parse_reference(name)
        except BadReference as exc:
            raise errors.InvalidInput(
                f"unknown image {name!r}: not a built-in image ({', '.join(self.names()) or 'none'}) "
                f"nor an image reference ({exc})",
                code="unknown_image",
            ) from None
        report = await self.registry.pull(reference, credentials, account)
        stored = report.image
        env = dict(item.split("=", 1) for item in stored.env)
        return Image(
            name=str(reference.pinned(stored.digest)) if reference.digest is None else str(reference),
            rootfs=self.registry.layer_dir(stored.layers[-1]),
            layers=tuple(self.registry.layer_dir(layer) for layer in reversed(stored.layers)),
            digest=stored.digest,
            env=env,
            working_dir=stored.working_dir or None,
            user=stored.user or None,
        )
