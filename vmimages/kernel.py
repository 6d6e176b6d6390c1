"""Debian's kernel for the guest: the image, and the modules the guest needs.

The cloud kernel builds virtio-pci, virtio-blk, virtio-console, overlayfs and
erofs as modules. The initramfs loads them with busybox ``insmod``, which
knows nothing of dependencies, so the load order is worked out here from each
module's ``.modinfo`` section (its ``depends=`` entry): no depmod needed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from vmimages import debs

# What the guest loads (with their dependencies), by module name.
GUEST_MODULES = ("virtio_pci", "virtio_mmio", "virtio_blk", "virtio_console", "virtio_net", "erofs", "overlay")


@dataclass(frozen=True)
class Kernel:
    release: str  # e.g. 6.1.0-56-cloud-amd64
    version: str  # the Debian package version
    package: str
    vmlinuz: Path
    modules_dir: Path  # lib/modules/<release>


def fetch(package: str, workdir: Path) -> Kernel:
    """Download and unpack the kernel package; a metapackage is followed once."""
    meta = debs.fetch(package, workdir / "debs")
    image = meta
    if not _kernel_images(debs.extract(meta, workdir / "meta")):
        [name] = [d for d in debs.depends(meta.deb) if d.startswith("linux-image-")]
        image = debs.fetch(name, workdir / "debs")
    root = debs.extract(image, workdir / "kernel")
    [vmlinuz] = _kernel_images(root)
    release = vmlinuz.name.removeprefix("vmlinuz-")
    return Kernel(
        release=release,
        version=image.version,
        package=image.name,
        vmlinuz=vmlinuz,
        modules_dir=root / "lib/modules" / release,
    )


def _kernel_images(root: Path) -> list[Path]:
    return sorted((root / "boot").glob("vmlinuz-*")) if (root / "boot").is_dir() else []


def modinfo(module: Path) -> dict[str, str]:
    """The ``key=value`` strings of an ELF64 module's ``.modinfo`` section."""
    data = module.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError(f"{module} is not an ELF64 object (compressed modules are not supported)")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    # Section header: name, type, flags, addr, offset, size, link, info, align, entsize.
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    for header in headers:
        start = names_at + header[0]
        if data[start : data.index(b"\0", start)] == b".modinfo":
            section = data[header[4] : header[4] + header[5]]
            pairs = (item.decode().partition("=") for item in section.split(b"\0") if b"=" in item)
            return {key: value for key, _, value in pairs}
    return {}


def load_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The module files for ``wanted`` and their dependencies, dependencies first.

    Modules built into the kernel (``modules.builtin``) need no loading and
    are left out.
    """
    by_name = {p.name.removesuffix(".ko").replace("-", "_"): p for p in modules_dir.rglob("*.ko")}
    builtin = {
        Path(line).name.removesuffix(".ko").replace("-", "_")
        for line in (modules_dir / "modules.builtin").read_text().split()
    }
    order: list[Path] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in builtin or by_name.get(name) in order:
            return
        if name in chain:
            raise ValueError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        if name not in by_name:
            raise ValueError(f"kernel has no module {name!r}")
        for dep in filter(None, modinfo(by_name[name]).get("depends", "").split(",")):
            visit(dep.replace("-", "_"), (*chain, name))
        order.append(by_name[name])

    for name in wanted:
        visit(name, ())
    return order
