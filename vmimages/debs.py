"""Debian packages as build inputs, fetched with apt-get from the host's sources.

The VM image takes its kernel and busybox from Debian packages: the
same registry the host installs from, and nothing downloaded any other way.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    deb: Path


def fetch(name: str, dest: Path) -> Package:
    """Download the candidate version of ``name`` into ``dest`` (no install)."""
    dest.mkdir(parents=True, exist_ok=True)
    # apt's download sandbox user cannot write to a root-owned build dir.
    subprocess.run(
        ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", name],
        cwd=dest,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    [deb] = sorted(dest.glob(f"{name}_*.deb"))
    return Package(name=name, version=field(deb, "Version"), deb=deb)


def field(deb: Path, name: str) -> str:
    """A control field of a .deb (``Version``, ``Depends``...)."""
    done = subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def depends(deb: Path) -> list[str]:
    """Names of the packages a .deb depends on (alternatives: the first)."""
    names = []
    for clause in field(deb, "Depends").split(","):
        match = re.match(r"\s*([a-z0-9][a-z0-9+.-]*)", clause)
        if match:
            names.append(match.group(1))
    return names


def extract(package: Package, target: Path) -> Path:
    """Unpack the package's files (not its scripts) under ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(package.deb), str(target)], check=True)
    return target
