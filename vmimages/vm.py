"""Build microVM images, once per recipe digest.

A VM image is a directory beside the root filesystems, ``<slug>-<digest16>``:

    vmlinuz        Debian's kernel (from ``recipe.kernel_package``)
    initrd.img     our initramfs (see initramfs.py)
    rootfs.erofs   the root filesystem recipe's tree as a read-only disk
    scratch.ext4   a blank, sparse ext4 disk: sessions' overlays sit on it
    manifest.json  written last; the build is complete once it exists

Like the root filesystems, a finished image is never written again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vmimages import debs, disk, initramfs, kernel, rootfs
from vmimages.recipes import VmRecipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VmImageFiles:
    """Where a VM image's parts are; ``disk`` is what the image store hands out."""

    disk: Path

    @property
    def kernel(self) -> Path:
        return self.disk.parent / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.disk.parent / "initrd.img"

    @property
    def scratch(self) -> Path:
        return self.disk.parent / "scratch.ext4"


def files(images_dir: Path, recipe: VmRecipe) -> VmImageFiles:
    return VmImageFiles(rootfs.image_dir(images_dir, recipe) / "rootfs.erofs")


def build(images_dir: Path, recipe: VmRecipe, mirror: str = rootfs.DEFAULT_MIRROR) -> Path:
    """Build the image (and its root filesystem) unless built; return its disk."""
    tree = rootfs.build(images_dir, recipe.rootfs, mirror)
    target = rootfs.image_dir(images_dir, recipe)
    with open(images_dir / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not rootfs.is_built(images_dir, recipe):
            partial = images_dir / f".{target.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)
            partial.mkdir()
            _assemble(recipe, tree, partial)
            partial.rename(target)
    return files(images_dir, recipe).disk


def _assemble(recipe: VmRecipe, tree: Path, out: Path) -> None:
    started = time.monotonic()
    log.info("building VM image %s into %s", recipe.name, out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".vm-build-") as work_dir:
        work = Path(work_dir)
        guest_kernel = kernel.fetch(recipe.kernel_package, work)
        busybox = debs.fetch("busybox-static", work / "debs")
        unpacked = work / "unpacked"
        debs.extract(busybox, unpacked)
        modules = kernel.load_order(guest_kernel.modules_dir, kernel.GUEST_MODULES)
        shutil.copyfile(guest_kernel.vmlinuz, out / "vmlinuz")
        initramfs.write(out / "initrd.img", busybox=unpacked / "bin/busybox", modules=modules)
    disk.make_erofs(tree, out / "rootfs.erofs")
    disk.make_scratch(out / "scratch.ext4", recipe.scratch_gib)
    manifest = {
        "name": recipe.name,
        "digest": recipe.digest(),
        "rootfs": recipe.rootfs.name,
        "kernel": {"package": guest_kernel.package, "version": guest_kernel.version, "release": guest_kernel.release},
        "busybox": busybox.version,
        "modules": [m.name for m in modules],
        "built_at": time.time(),
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    log.info("built VM image %s in %.0fs", recipe.name, manifest["build_seconds"])
