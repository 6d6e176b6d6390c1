"""Build any recipe: a root filesystem, or a VM image (and the rootfs it needs)."""

from __future__ import annotations

from pathlib import Path

from vmimages import rootfs, vm
from vmimages.recipes import AnyRecipe, VmRecipe


def build(images_dir: Path, recipe: AnyRecipe, mirror: str = rootfs.DEFAULT_MIRROR) -> Path:
    """Build unless built; return what sessions start from (see ``root_of``)."""
    if isinstance(recipe, VmRecipe):
        return vm.build(images_dir, recipe, mirror)
    return rootfs.build(images_dir, recipe, mirror)


def root_of(images_dir: Path, recipe: AnyRecipe) -> Path:
    """A root filesystem's tree, or a VM image's read-only disk (its boot files beside it)."""
    if isinstance(recipe, VmRecipe):
        return vm.files(images_dir, recipe).disk
    return rootfs.image_dir(images_dir, recipe) / "rootfs"
