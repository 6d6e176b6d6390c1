"""Hostile layers: each is refused with a clear reason and writes nothing outside its directory."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from pathlib import Path

import pytest

from agent.registry.unpack import LayerRefused, LayerTooLarge, unpack_layer
from agent.storage.idmap import IdMap
from tests.registry_support import Entry, tar_layer

DIR, SYM, LNK, CHR = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE
IDMAP = IdMap()


def unpack(tmp_path: Path, layer: bytes, max_bytes: int = 1 << 30) -> Path:
    blob = tmp_path / "blob"
    blob.write_bytes(layer)
    target = tmp_path / "layer"
    target.mkdir()
    raw = gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer
    unpack_layer(
        blob,
        target,
        IDMAP,
        digest="sha256:" + hashlib.sha256(layer).hexdigest(),
        diff_id="sha256:" + hashlib.sha256(raw).hexdigest(),
        max_bytes=max_bytes,
    )
    return target


def test_a_plain_layer_with_whiteouts_becomes_overlay_lower(tmp_path: Path) -> None:
    layer = tar_layer(
        [
            Entry("etc/", type=DIR, mode=0o755),
            Entry("etc/motd", b"hi\n", uid=1000, gid=1000),
            Entry("etc/.wh.gone"),
            Entry("opt/.wh..wh..opq"),
            Entry("bin/su", b"x", mode=0o4755),
            Entry("link", type=SYM, linkname="/etc/motd"),
            Entry("hard", type=LNK, linkname="etc/motd"),
        ]
    )
    target = unpack(tmp_path, layer)
    motd = (target / "etc/motd").stat()
    assert (motd.st_uid, motd.st_gid) == (IDMAP.first + 1000, IDMAP.first + 1000)
    gone = (target / "etc/gone").lstat()
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(target / "opt", "trusted.overlay.opaque") == b"y"
    assert stat.S_IMODE((target / "bin/su").stat().st_mode) == 0o755  # setuid dropped
    assert os.readlink(target / "link") == "/etc/motd"  # kept, never followed here
    assert (target / "hard").stat().st_ino == motd.st_ino


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([Entry("../escaped", b"x")], "'..'"),
        ([Entry("a/../../escaped", b"x")], "'..'"),
        ([Entry("/escaped", b"x")], "absolute"),
        ([Entry("out", type=SYM, linkname="{outside}"), Entry("out/escaped", b"x")], "symlink"),
        ([Entry("up", type=SYM, linkname="../.."), Entry("up/escaped", b"x")], "symlink"),
        ([Entry("hard", type=LNK, linkname="../outside/secret")], "'..'"),
        ([Entry("hard", type=LNK, linkname="nothing-here")], "not in the layer"),
        ([Entry("dev/sda", type=CHR, devmajor=8, devminor=0)], "device node"),
    ],
)
def test_hostile_entries_are_refused(tmp_path: Path, entries: list[Entry], reason: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    for entry in entries:
        entry.linkname = entry.linkname.replace("{outside}", str(outside))
    with pytest.raises(LayerRefused, match=reason):
        unpack(tmp_path, tar_layer(entries))
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert not (tmp_path / "escaped").exists()


def test_a_decompression_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    bomb = tar_layer([Entry("zeros", bytes(8 << 20))])
    assert len(bomb) < 64 << 10
    with pytest.raises(LayerTooLarge):
        unpack(tmp_path, bomb, max_bytes=1 << 20)


def test_a_layer_not_matching_its_digest_is_refused(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(tar_layer([Entry("f", b"x")]))
    (tmp_path / "layer").mkdir()
    with pytest.raises(LayerRefused, match="digest"):
        unpack_layer(blob, tmp_path / "layer", IDMAP, digest="sha256:" + "0" * 64, diff_id=None, max_bytes=1 << 20)


def test_garbage_is_not_a_layer(tmp_path: Path) -> None:
    with pytest.raises(LayerRefused, match="not a valid tar"):
        unpack(tmp_path, gzip.compress(b"this is no tar stream" * 100))
