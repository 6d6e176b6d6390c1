"""The layer store against a real registry on loopback: shared layers are fetched and stored once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import RegistryConfig
from agent.registry.store import LayerStore
from agent.storage.idmap import IdMap
from chaser.wire.image_reference import parse_reference
from tests.registry_support import BuiltImage, Entry, Registry, busybox_layer, running_registry, tar_layer


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    yield from running_registry(tmp_path / "registry")


async def test_a_second_image_sharing_the_base_fetches_only_its_own_layer(registry: Registry, tmp_path: Path) -> None:
    base = busybox_layer()
    await registry.push(BuiltImage([base, tar_layer([Entry("one", b"1")])]), "shared/one:1", tmp_path)
    await registry.push(BuiltImage([base, tar_layer([Entry("two", b"2")])]), "shared/two:1", tmp_path)
    store = LayerStore(tmp_path / "store", IdMap(), RegistryConfig(allowed=[registry.host], tag_ttl=0))

    first = await store.pull(parse_reference(f"{registry.host}/shared/one:1"), None, "account-a")
    second = await store.pull(parse_reference(f"{registry.host}/shared/two:1"), None, "account-a")
    assert first.fetched_layers == 2
    assert second.fetched_layers == 1 and second.fetched_bytes < len(base)
    assert first.image.layers[0] == second.image.layers[0]
    assert len(list((tmp_path / "store" / "layers").iterdir())) == 3 + 3  # three layers, each with its size note

    again = await store.pull(parse_reference(f"{registry.host}/shared/one:1"), None, "account-b")
    assert again.fetched_layers == 0 and again.image.digest == first.image.digest
