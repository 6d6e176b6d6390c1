"""Image recipes and builders: the root filesystems and VM images sessions boot from."""

from vmimages.builder import build, root_of
from vmimages.recipes import ALIASES, RECIPES, AnyRecipe, Recipe, VmRecipe, resolve
from vmimages.rootfs import DEFAULT_MIRROR, image_dir, is_built

__all__ = [
    "ALIASES",
    "DEFAULT_MIRROR",
    "RECIPES",
    "AnyRecipe",
    "Recipe",
    "VmRecipe",
    "build",
    "image_dir",
    "is_built",
    "resolve",
    "root_of",
]
