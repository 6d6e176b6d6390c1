"""Image manifests, indexes and configs, read as untrusted JSON into typed values.

Each document is bounded in size, must carry a media type we know, and
every field we use is checked for its type: a malformed one is an
``InvalidImage`` saying what was wrong, never a ``KeyError`` further on.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from typing import Any

from chaser.wire.image_reference import DIGEST

MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 8 << 20
MAX_LAYERS = 128

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
CONFIG_TYPES = frozenset({"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"})
LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


class InvalidImage(Exception):
    """The image's manifest or config is malformed, too large or of a kind we don't run."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]  # base first


@dataclass(frozen=True)
class ImageConfig:
    env: tuple[str, ...]  # "NAME=value", as the image sets them
    working_dir: str
    user: str
    diff_ids: tuple[str, ...]  # uncompressed digests, one per layer


def _load(raw: bytes, limit: int, what: str) -> dict[str, Any]:
    if len(raw) > limit:
        raise InvalidImage(f"the image's {what} is {len(raw)} bytes, more than the {limit} allowed")
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidImage(f"the image's {what} is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidImage(f"the image's {what} is not a JSON object")
    return document


def _descriptor(value: object, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise InvalidImage(f"the manifest's {what} is not an object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise InvalidImage(f"the manifest's {what} has no media type or no sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidImage(f"the manifest's {what} has no valid size")
    return Descriptor(media_type, digest, size)


def media_type_of(raw: bytes) -> str:
    """The media type a manifest or index declares (both carry ``mediaType`` when pushed by skopeo or Docker)."""
    document = _load(raw, MAX_MANIFEST_BYTES, "manifest")
    media_type = document.get("mediaType")
    if media_type is None and "manifests" in document:
        return OCI_INDEX  # the field is optional in an OCI index
    if media_type is None and "layers" in document:
        return OCI_MANIFEST
    if not isinstance(media_type, str):
        raise InvalidImage("the manifest has no media type")
    return media_type


def is_index(raw: bytes) -> bool:
    return media_type_of(raw) in (OCI_INDEX, DOCKER_LIST)


def platform_manifest(raw: bytes) -> str:
    """The digest, in an index, of the manifest for this host (linux on its architecture)."""
    document = _load(raw, MAX_MANIFEST_BYTES, "index")
    entries = document.get("manifests")
    if not isinstance(entries, list):
        raise InvalidImage("the image index lists no manifests")
    for entry in entries:
        descriptor = _descriptor(entry, "index entry")
        found = entry.get("platform") if isinstance(entry, dict) else None
        if isinstance(found, dict) and found.get("os") == "linux" and found.get("architecture") == _ARCH:
            return descriptor.digest
    raise InvalidImage(f"the image has no manifest for linux/{_ARCH}")


def parse_manifest(raw: bytes) -> Manifest:
    document = _load(raw, MAX_MANIFEST_BYTES, "manifest")
    media_type = media_type_of(raw)
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise InvalidImage(f"the manifest's media type {media_type!r} is not an image manifest")
    config = _descriptor(document.get("config"), "config")
    if config.media_type not in CONFIG_TYPES:
        raise InvalidImage(f"the config's media type {config.media_type!r} is not an image config")
    if config.size > MAX_CONFIG_BYTES:
        raise InvalidImage(f"the image's config is {config.size} bytes, more than the {MAX_CONFIG_BYTES} allowed")
    layers = document.get("layers")
    if not isinstance(layers, list) or not layers:
        raise InvalidImage("the manifest lists no layers")
    if len(layers) > MAX_LAYERS:
        raise InvalidImage(f"the image has {len(layers)} layers, more than the {MAX_LAYERS} allowed")
    parsed = tuple(_descriptor(layer, "layer") for layer in layers)
    for layer in parsed:
        if layer.media_type not in LAYER_TYPES:
            raise InvalidImage(f"layer {layer.digest} has media type {layer.media_type!r}, not a tar layer we unpack")
    return Manifest(config=config, layers=parsed)


def parse_config(raw: bytes, layers: int) -> ImageConfig:
    document = _load(raw, MAX_CONFIG_BYTES, "config")
    process = document.get("config") or {}
    rootfs = document.get("rootfs")
    if not isinstance(process, dict) or not isinstance(rootfs, dict):
        raise InvalidImage("the image's config has no valid 'config' or 'rootfs'")
    env = process.get("Env") or []
    working_dir = process.get("WorkingDir") or ""
    user = process.get("User") or ""
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(env, list) or not all(isinstance(item, str) and "=" in item for item in env):
        raise InvalidImage("the image's Env is not a list of NAME=value strings")
    if not isinstance(working_dir, str) or not isinstance(user, str):
        raise InvalidImage("the image's WorkingDir or User is not a string")
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and DIGEST.fullmatch(d) for d in diff_ids):
        raise InvalidImage("the image's rootfs.diff_ids is not a list of sha256 digests")
    if len(diff_ids) != layers:
        raise InvalidImage(f"the image's config names {len(diff_ids)} layers, its manifest {layers}")
    return ImageConfig(env=tuple(env), working_dir=working_dir, user=user, diff_ids=tuple(diff_ids))
