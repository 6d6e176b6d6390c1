"""Removing images from the layer store: never what a sandbox runs, shared layers kept while listed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import RegistryConfig
from agent.registry.collect import collect, delete_image, store_size
from agent.registry.store import LayerStore
from agent.storage.idmap import IdMap
from chaser.wire import errors
from chaser.wire.image_reference import parse_reference
from tests.registry_support import BuiltImage, Entry, Registry, busybox_layer, running_registry, tar_layer


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    yield from running_registry(tmp_path / "registry")


async def test_collection_by_budget_spares_what_runs_and_the_layers_it_shares(
    registry: Registry, tmp_path: Path
) -> None:
    base = busybox_layer()
    names = {"running": [base, tar_layer([Entry("one", b"1")])], "sharing": [base, tar_layer([Entry("two", b"2")])]}
    names["alone"] = [tar_layer([Entry("three", b"3" * 4096)])]
    for name, layers in names.items():
        await registry.push(BuiltImage(layers), f"gc/{name}:1", tmp_path)
    config = RegistryConfig(allowed=[registry.host], tag_ttl=0, gc_min_age=0, store_budget_bytes=1)
    store = LayerStore(tmp_path / "store", IdMap(), config)
    pulled = {
        name: (await store.pull(parse_reference(f"{registry.host}/gc/{name}:1"), None, None)).image for name in names
    }
    running = pulled["running"]
    before = store_size(store)

    # A sandbox runs "running": it cannot be deleted, and a collection over budget removes only the others.
    with pytest.raises(errors.Conflict, match="in use"):
        await delete_image(store, running.digest, {running.digest})
    result = await collect(store, {running.digest})
    assert set(result.images) == {pulled["sharing"].digest, pulled["alone"].digest}
    assert [image.digest for image in store.images()] == [running.digest]
    assert all(store.layer_dir(layer).is_dir() for layer in running.layers)  # the shared base included
    assert not any(store.layer_dir(layer).exists() for layer in pulled["sharing"].layers[1:])
    assert not store.layer_dir(pulled["alone"].layers[0]).exists()
    assert 0 < result.size_after < before and result.bytes_freed > 0
    again = await store.pull(parse_reference(f"{registry.host}/gc/running:1"), None, None)
    assert again.fetched_layers == 0  # what runs was not touched

    # Once nothing runs it, it goes on request, layers and all; nothing is left behind.
    removed = await delete_image(store, running.digest, set())
    assert removed.images == (running.digest,) and removed.size_after == 0
    assert list((tmp_path / "store" / "layers").iterdir()) == []
    with pytest.raises(errors.NotFound):
        await delete_image(store, running.digest, set())

    # An image used lately is kept whatever the budget (a create may be about to run it).
    recent = await store.pull(parse_reference(f"{registry.host}/gc/alone:1"), None, None)
    store.config.gc_min_age = 600
    assert (await collect(store, set())).images == ()
    assert store.get(recent.image.digest) is not None
