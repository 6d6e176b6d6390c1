"""Removing images from the layer store: on request, and by last use when over its size budget.

An image is in use while a sandbox on this host (running, paused or
starting) runs it, while a pull of it is in flight, or for
``registry.gc_min_age`` seconds after its last use (a create that just
pulled it has not registered its sandbox yet). In-use images are never
removed, and neither is any layer an image still in the store lists, so a
base layer shared with a running image survives its other images.

A layer goes by first renaming it out of the store's names (atomic: a
pull starting at that moment fetches it anew) and only then deleting the
renamed tree; a crash in between leaves ``.partial-*`` debris, removed at
the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import trio

from agent.registry.store import LayerStore, StoredImage
from chaser.wire import errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collected:
    images: tuple[str, ...]  # digests removed
    layers: int
    bytes_freed: int
    size_after: int


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def layer_bytes(store: LayerStore, digest: str) -> int:
    """What one layer takes: unpacked, plus its compressed blob kept for pulls sharing it."""
    size = 0
    with contextlib.suppress(OSError, ValueError):
        size += int((store.root / "layers" / f".{_hex(digest)}.size").read_text())
    with contextlib.suppress(OSError):
        size += (store.root / "blobs" / "sha256" / _hex(digest)).stat().st_size
    return size


def held_layers(store: LayerStore) -> set[str]:
    return {f"sha256:{p.name}" for p in (store.root / "layers").iterdir() if len(p.name) == 64}


def store_size(store: LayerStore) -> int:
    return sum(layer_bytes(store, digest) for digest in held_layers(store))


def in_use(store: LayerStore, image: StoredImage, running: Collection[str], now: float) -> bool:
    return image.digest in running or store.pulling(image.digest) or now - image.last_used < store.config.gc_min_age


def _detach_layers(store: LayerStore, digests: Collection[str]) -> list[Path]:
    """Take layers out of the store's names (fast, in the event loop); the trees left to delete."""
    doomed = []
    for digest in digests:
        target = store.layer_dir(digest)
        moved = target.with_name(f".partial-gc-{_hex(digest)}-{uuid.uuid4().hex}")
        try:
            os.rename(target, moved)
        except FileNotFoundError:
            continue
        doomed.append(moved)
        (store.root / "layers" / f".{_hex(digest)}.size").unlink(missing_ok=True)
        (store.root / "blobs" / "sha256" / _hex(digest)).unlink(missing_ok=True)
    return doomed


def _unreferenced(store: LayerStore) -> set[str]:
    kept = {layer for image in store.images() for layer in image.layers}
    return held_layers(store) - kept


async def _remove_trees(trees: list[Path]) -> None:
    for tree in trees:
        await trio.to_thread.run_sync(shutil.rmtree, tree, True)


async def delete_image(store: LayerStore, digest: str, running: Collection[str]) -> Collected:
    """Remove one image and the layers no other image lists; 409 while a sandbox runs it."""
    image = store.get(digest)
    if image is None:
        raise errors.NotFound(f"image {digest} is not on this host", code="image_not_found")
    if digest in running or store.pulling(digest):
        raise errors.Conflict(f"image {digest} is in use by a session on this host", code="image_in_use")
    store.forget(digest)
    # While another pull is in flight its layers are listed by no image yet: the next collect frees ours.
    layers = set() if store.pulling() else _unreferenced(store)
    freed = sum(layer_bytes(store, layer) for layer in layers)
    await _remove_trees(_detach_layers(store, layers))
    return Collected((digest,), len(layers), freed, store_size(store))


async def collect(store: LayerStore, running: Collection[str], budget: int | None = None) -> Collected:
    """Remove images by last use, least recent first, until the store fits ``budget`` (the config's if None).

    Layers no image lists (left by a removed image) go first, whatever the budget.
    """
    if store.pulling():  # a pull's layers are in the store before its image lists them
        return Collected((), 0, 0, store_size(store))
    budget = store.config.store_budget_bytes if budget is None else budget
    now = time.time()
    removed: list[str] = []
    orphans = _unreferenced(store)
    freed = sum(layer_bytes(store, layer) for layer in orphans)
    doomed = _detach_layers(store, orphans)
    if budget is not None:
        size = store_size(store)
        for image in sorted(store.images(), key=lambda i: i.last_used):
            if size <= budget:
                break
            if in_use(store, image, running, now):
                continue
            store.forget(image.digest)
            removed.append(image.digest)
            layers = _unreferenced(store)
            gone = sum(layer_bytes(store, layer) for layer in layers)
            doomed += _detach_layers(store, layers)
            size -= gone
            freed += gone
    await _remove_trees(doomed)
    result = Collected(tuple(removed), len(doomed), freed, store_size(store))
    if doomed:
        log.info("image store: removed %d images, %d layers, %d bytes", len(removed), len(doomed), freed)
    return result
