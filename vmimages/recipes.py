"""Image recipes: what goes into each named root filesystem or microVM image.

A recipe is pure data. Its digest names the built tree on disk, so changing a
recipe (or the builder's own behaviour, via BUILDER_VERSION) builds a new
tree instead of silently reusing an old one. A recipe also says which
runtime boots it: a root filesystem runs as an LXC container, a VM recipe
(the same root filesystem as a read-only disk, plus Debian's kernel and our
initramfs) as a QEMU microVM.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import ClassVar

from vmimages import initramfs

# Bump when build.py changes what it produces from the same recipe.
BUILDER_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """A Debian root filesystem built by debootstrap."""

    runtime: ClassVar[str] = "lxc"

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

# Bump when the VM image builder (vmimages/vm.py and what it assembles)
# changes what it produces from the same recipe.
VM_BUILDER_VERSION = 1


@dataclass(frozen=True)
class VmRecipe:
    """A bootable microVM image made from a root filesystem recipe.

    The initramfs builder's own inputs (it and the init script) are part of
    the digest, so changing them builds a new image. The guest agent is not:
    VMs start it from the bundle's disk (``vmimages.bundle``).
    """

    runtime: ClassVar[str] = "qemu"

    name: str
    rootfs: Recipe
    # A Debian package (or metapackage) whose kernel and modules are booted.
    kernel_package: str = "linux-image-cloud-amd64"
    # Size of the blank writable disk each session's overlay sits on.
    scratch_gib: int = 8

    def digest(self) -> str:
        """Stable hash of the recipe, its root filesystem's and the initramfs builder's."""
        material = json.dumps(
            {
                "name": self.name,
                "rootfs": self.rootfs.digest(),
                "kernel_package": self.kernel_package,
                "scratch_gib": self.scratch_gib,
                "builder": VM_BUILDER_VERSION,
                "initramfs": initramfs.inputs_digest(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()

    @property
    def slug(self) -> str:
        return self.name.replace(":", "_").replace("/", "_")


DEBIAN_BOOKWORM_VM = VmRecipe(name="debian:bookworm-vm", rootfs=DEBIAN_BOOKWORM)

AnyRecipe = Recipe | VmRecipe

RECIPES: dict[str, AnyRecipe] = {r.name: r for r in (DEBIAN_BOOKWORM, DEBIAN_BOOKWORM_CHROMIUM, DEBIAN_BOOKWORM_VM)}

# Names users may write instead of a recipe's own name.
ALIASES: dict[str, str] = {
    "default": DEBIAN_BOOKWORM.name,
    "browser": DEBIAN_BOOKWORM_CHROMIUM.name,
    "default-vm": DEBIAN_BOOKWORM_VM.name,
}


def resolve(name: str) -> AnyRecipe | None:
    """The recipe a user-facing image name refers to, or None."""
    return RECIPES.get(ALIASES.get(name, name))
