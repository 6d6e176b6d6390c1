"""Image recipes and builders: the root filesystems sessions boot from."""

from vmimages.recipes import ALIASES, RECIPES, Recipe, resolve
from vmimages.rootfs import DEFAULT_MIRROR, build, image_dir, is_built

__all__ = ["ALIASES", "DEFAULT_MIRROR", "RECIPES", "Recipe", "build", "image_dir", "is_built", "resolve"]
