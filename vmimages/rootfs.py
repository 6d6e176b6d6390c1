"""Build image root filesystems with debootstrap, once per recipe digest.

The finished tree lives at ``<images_dir>/<slug>-<digest16>/rootfs`` and is
never written again: sessions mount it read-only as the lower layer of an
overlay. A ``manifest.json`` written last marks the build complete, so a
build cut off half-way is simply redone. A file lock keeps two builders on
one machine (say ``chaser up`` and the test suite) from racing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

from vmimages.recipes import AnyRecipe, Recipe

log = logging.getLogger(__name__)

DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Written into every image so that name resolution of localhost works
# without a network; the agent supplies resolv.conf at session start.
_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def image_dir(images_dir: Path, recipe: AnyRecipe) -> Path:
    """Where the built image of a recipe lives (whether built or not)."""
    return images_dir / f"{recipe.slug}-{recipe.digest()[:16]}"


def is_built(images_dir: Path, recipe: AnyRecipe) -> bool:
    """True when a complete build of this exact recipe is on disk."""
    return (image_dir(images_dir, recipe) / "manifest.json").is_file()


def build(images_dir: Path, recipe: Recipe, mirror: str = DEFAULT_MIRROR) -> Path:
    """Build the recipe's rootfs unless already built; return its rootfs path."""
    target = image_dir(images_dir, recipe)
    images_dir.mkdir(parents=True, exist_ok=True)
    with open(images_dir / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(images_dir, recipe):
            return target / "rootfs"
        partial = images_dir / f".{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        partial.mkdir()
        started = time.monotonic()
        log.info("building image %s into %s", recipe.name, target)
        _debootstrap(recipe, partial / "rootfs", mirror)
        if recipe.apt_packages:
            _apt_install(partial / "rootfs", recipe.apt_packages)
        _finish_rootfs(partial / "rootfs")
        manifest = {
            "name": recipe.name,
            "digest": recipe.digest(),
            "packages": list(recipe.packages),
            "built_at": time.time(),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2))
        partial.rename(target)
        log.info("built image %s in %.0fs", recipe.name, manifest["build_seconds"])
        return target / "rootfs"


def _debootstrap(recipe: Recipe, rootfs: Path, mirror: str) -> None:
    cmd = [
        "debootstrap",
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(rootfs),
        mirror,
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _apt_install(rootfs: Path, packages: tuple[str, ...]) -> None:
    """apt-get install inside the tree, with the host's resolver and /proc."""
    shutil.copyfile("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    proc = rootfs / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    try:
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        apt = ["chroot", str(rootfs), "apt-get", "-q", "-y"]
        subprocess.run([*apt, "update"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(
            [*apt, "install", "--no-install-recommends", *packages],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run([*apt, "clean"], check=True, env=env)
    finally:
        subprocess.run(["umount", "-l", str(proc)], check=False)
        (rootfs / "etc/resolv.conf").unlink(missing_ok=True)


def _finish_rootfs(rootfs: Path) -> None:
    """Trim caches and write the few files every session expects."""
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for lists in (rootfs / "var/lib/apt/lists").glob("*_Packages"):
        lists.unlink()
    (rootfs / "etc/hosts").write_text(_HOSTS)
    (rootfs / "etc/hostname").write_text("sandbox\n")
    (rootfs / "root/workspace").mkdir(parents=True, exist_ok=True)
