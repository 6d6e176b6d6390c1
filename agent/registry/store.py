"""The host's layer store: registry images pulled once, each layer unpacked once.

Layout under the store's root (``registry.store_dir``)::

    blobs/sha256/<hex>      compressed layers as pulled, kept so the next
                            pull of an image sharing them skips them
    layers/<hex>            each layer unpacked (``unpack``), owned by the
                            containers' shifted ids; a lower of overlays
    images/<hex>.json       an image by the digest its reference resolved to:
                            its layers, its config, who may use it
    pulls/<random>/         one pull in flight (an OCI layout skopeo fills)

A layer or image appears under its name only once complete (renamed into
place), so a pull cut short by a dead registry, a full disk or a crash
leaves only ``pulls/`` and ``.partial-*`` debris, removed at start.

A tag is resolved to a digest with the caller's credentials (answers are
kept ``tag_ttl`` seconds per caller), and the digest is what a session
records and runs: a tag pushed anew later changes no running session. An
image pulled with credentials serves only the accounts that showed the
registry they may read it; one pulled without serves anyone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import trio

from agent.config import RegistryConfig
from agent.registry import manifest as oci
from agent.registry.skopeo import Credentials, Skopeo
from agent.registry.unpack import LayerRefused, LayerTooLarge, unpack_layer
from agent.storage.idmap import IdMap
from chaser.wire import errors
from chaser.wire.image_reference import ImageReference

log = logging.getLogger(__name__)

_RAW_KEPT = 64  # manifests fetched while resolving a tag, kept for the pull that follows


@dataclass(frozen=True)
class StoredImage:
    digest: str  # what the reference resolved to (an index or a manifest)
    layers: tuple[str, ...]  # layer digests, base first
    env: tuple[str, ...]
    working_dir: str
    user: str
    size: int  # bytes unpacked
    public: bool  # pulled without credentials: anyone may use it
    accounts: tuple[str, ...]  # accounts that showed the registry they may read it
    references: tuple[str, ...]  # the canonical references that resolved to it
    last_used: float

    def usable_by(self, account: str | None) -> bool:
        return self.public or (account is not None and account in self.accounts)


@dataclass(frozen=True)
class PullReport:
    image: StoredImage
    fetched_layers: int  # layers that had to come from the registry
    fetched_bytes: int  # their compressed size


@dataclass
class PullProgress:
    """How far one pull is, for ``POST /v1/images``: layers and bytes fetched, then unpacked."""

    phase: str = "resolving"  # resolving | fetching | unpacking | done
    layers_total: int = 0
    layers_done: int = 0  # fetched or already held
    bytes_total: int = 0  # compressed bytes of the layers to fetch
    bytes_done: int = 0


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def refused(exc: Exception) -> errors.ApiError:
    """The error a user sees for an image the store will not take."""
    if isinstance(exc, LayerTooLarge):
        return errors.InvalidInput(str(exc), code="image_too_large")
    return errors.InvalidInput(f"invalid image: {exc}", code="invalid_image")


class LayerStore:
    def __init__(self, root: Path, idmap: IdMap, config: RegistryConfig) -> None:
        self.root = root
        self.idmap = idmap
        self.config = config
        for sub in ("blobs/sha256", "layers", "images", "pulls"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        root.chmod(0o711)
        (root / "layers").chmod(0o711)  # containers' root passes through to each layer
        self.skopeo = Skopeo(root / "skopeo", config.hosts)
        self._clear_debris()
        self._tags: dict[tuple[str, str | None], tuple[str, float]] = {}
        self._raw: dict[str, bytes] = {}
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        self._limiter = trio.CapacityLimiter(2)

    def _clear_debris(self) -> None:
        for pull in (self.root / "pulls").iterdir():
            shutil.rmtree(pull, ignore_errors=True)
        for partial in (self.root / "layers").glob(".partial-*"):
            shutil.rmtree(partial, ignore_errors=True)
        for tmp in (self.root / "images").glob("*.tmp"):
            tmp.unlink(missing_ok=True)

    # -- what the store holds ---------------------------------------------

    def layer_dir(self, digest: str) -> Path:
        return self.root / "layers" / _hex(digest)

    def _image_path(self, digest: str) -> Path:
        return self.root / "images" / f"{_hex(digest)}.json"

    def get(self, digest: str) -> StoredImage | None:
        try:
            data = json.loads(self._image_path(digest).read_text())
        except FileNotFoundError:
            return None
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return StoredImage(**fields)

    def _save(self, image: StoredImage) -> None:
        path = self._image_path(image.digest)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(image)))
        os.replace(tmp, path)

    def forget(self, digest: str) -> None:
        """Drop the image's record (its layers stay until nothing lists them: ``collect``)."""
        self._image_path(digest).unlink(missing_ok=True)

    def pulling(self, digest: str | None = None) -> bool:
        """Whether a pull (of ``digest``, or of anything) is in flight: its layers are not yet listed."""
        if digest is not None:
            return digest in self._locks and self._locks[digest].locked()
        return any(lock.locked() for lock in self._locks.values())

    def images(self) -> list[StoredImage]:
        found = (self.get(f"sha256:{p.stem}") for p in (self.root / "images").glob("*.json"))
        return [image for image in found if image is not None]

    # -- pulls ----------------------------------------------------------------

    async def pull(
        self,
        reference: ImageReference,
        credentials: Credentials | None,
        account: str | None,
        progress: PullProgress | None = None,
    ) -> PullReport:
        """The image ``reference`` names, from the store or pulled into it (``progress`` kept up to date)."""
        progress = progress if progress is not None else PullProgress()
        if not self.config.allows(reference.domain):
            raise errors.Forbidden(
                f"this host pulls no images from {reference.domain}; "
                f"allowed: {', '.join(self.config.allowed) or 'none'}",
                code="registry_not_allowed",
            )
        proven = reference.digest is None  # resolving a tag asks the registry as the caller
        digest = reference.digest or await self._resolve(reference, credentials, account)
        async with self._locks[digest]:
            stored = self.get(digest)
            if stored is not None and not (proven or stored.usable_by(account)):
                await self.skopeo.manifest(reference, credentials, self.config.resolve_timeout, digest=digest)
                proven = True
            if stored is not None:
                report = PullReport(stored, 0, 0)
                progress.layers_total = progress.layers_done = len(stored.layers)
            else:
                async with self._limiter:
                    report = await self._fetch(reference, digest, credentials, progress)
            image = self._remember(report.image, reference, credentials, account)
            progress.phase = "done"
            return replace(report, image=image)

    def _remember(
        self, image: StoredImage, reference: ImageReference, credentials: Credentials | None, account: str | None
    ) -> StoredImage:
        accounts = image.accounts
        if credentials is not None and account is not None and account not in accounts:
            accounts = (*accounts, account)
        name = str(reference)
        references = image.references if name in image.references else (*image.references, name)
        updated = replace(image, accounts=accounts, references=references, last_used=time.time())
        self._save(updated)
        return updated

    async def _resolve(self, reference: ImageReference, credentials: Credentials | None, account: str | None) -> str:
        key = (str(reference), account)
        cached = self._tags.get(key)
        if cached is not None and time.monotonic() - cached[1] < self.config.tag_ttl:
            return cached[0]
        raw = await self.skopeo.manifest(reference, credentials, self.config.resolve_timeout)
        digest = _sha256(raw)
        self._tags[key] = (digest, time.monotonic())
        self._raw[digest] = raw
        while len(self._raw) > _RAW_KEPT:
            self._raw.pop(next(iter(self._raw)))
        return digest

    async def _manifest(self, reference: ImageReference, digest: str, credentials: Credentials | None) -> bytes:
        raw = self._raw.pop(digest, None)
        if raw is None:
            raw = await self.skopeo.manifest(reference, credentials, self.config.resolve_timeout, digest=digest)
        if _sha256(raw) != digest:
            raise errors.InvalidInput(f"invalid image: the registry's manifest is not {digest}", code="invalid_image")
        return raw

    async def _fetch(
        self, reference: ImageReference, digest: str, credentials: Credentials | None, progress: PullProgress
    ) -> PullReport:
        with trio.fail_after(self.config.pull_timeout):
            try:
                raw = await self._manifest(reference, digest, credentials)
                target = digest
                if oci.is_index(raw):
                    target = oci.platform_manifest(raw)
                    raw = await self._manifest(reference, target, credentials)
                manifest = oci.parse_manifest(raw)
            except oci.InvalidImage as exc:
                raise refused(exc) from None
            total = sum(layer.size for layer in manifest.layers)
            if total > self.config.max_image_bytes:
                raise errors.InvalidInput(
                    f"image {reference} has {total} bytes of layers, "
                    f"more than this host's {self.config.max_image_bytes}",
                    code="image_too_large",
                )
            layout = self.root / "pulls" / uuid.uuid4().hex
            try:
                missing = await trio.to_thread.run_sync(self._prepare_layout, layout, manifest)
                progress.phase = "fetching"
                progress.layers_total = len(manifest.layers)
                progress.layers_done = len(manifest.layers) - len(missing)
                progress.bytes_total = sum(layer.size for layer in missing)
                async with trio.open_nursery() as watching:
                    watching.start_soon(self._watch, layout, missing, progress)
                    await self.skopeo.copy(reference, target, layout, credentials, self.config.pull_timeout)
                    watching.cancel_scope.cancel()
                progress.phase = "unpacking"
                progress.layers_done, progress.bytes_done = progress.layers_total, progress.bytes_total
                image = await trio.to_thread.run_sync(self._store_layout, layout, digest, manifest, credentials is None)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise errors.Unavailable("this host's image store is full", code="image_store_full") from None
                raise
            finally:
                await trio.to_thread.run_sync(shutil.rmtree, layout, True)
        fetched = sum(layer.size for layer in missing)
        log.info("pulled %s (%s): %d layers fetched, %d bytes", reference, digest, len(missing), fetched)
        return PullReport(image, len(missing), fetched)

    async def _watch(self, layout: Path, missing: list[oci.Descriptor], progress: PullProgress) -> None:
        """Follow skopeo's copy in the layout: a layer is done once its blob has its name there."""
        blobs = layout / "blobs" / "sha256"
        held = progress.layers_done
        while True:
            await trio.sleep(0.2)
            done = [layer for layer in missing if (blobs / _hex(layer.digest)).exists()]
            progress.layers_done = held + len(done)
            # Bytes of finished layers, plus those of the blob being written
            # (skopeo's temporary "oci-put-blob*" file in the layout).
            partial = 0
            with contextlib.suppress(OSError):
                for entry in os.scandir(layout):
                    if entry.name.startswith("oci-put-blob") and entry.is_file():
                        partial += entry.stat().st_size
            progress.bytes_done = min(sum(layer.size for layer in done) + partial, progress.bytes_total)

    def _prepare_layout(self, layout: Path, manifest: oci.Manifest) -> list[oci.Descriptor]:
        """An empty OCI layout holding the layers the store has (skopeo fetches only the rest); the rest."""
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        missing = []
        for layer in manifest.layers:
            kept = self.root / "blobs" / "sha256" / _hex(layer.digest)
            if kept.exists() and self.layer_dir(layer.digest).is_dir():
                os.link(kept, blobs / _hex(layer.digest))
            else:
                missing.append(layer)
        return missing

    def _store_layout(self, layout: Path, digest: str, expected: oci.Manifest, public: bool) -> StoredImage:
        """Check what skopeo wrote, unpack the layers the store lacks, and record the image."""
        try:
            index = json.loads((layout / "index.json").read_bytes())
            entry = index["manifests"][0]
            raw = (layout / "blobs" / "sha256" / _hex(entry["digest"])).read_bytes()
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise refused(oci.InvalidImage("the copied image has no readable manifest")) from None
        try:
            manifest = oci.parse_manifest(raw)
            if [layer.digest for layer in manifest.layers] != [layer.digest for layer in expected.layers]:
                raise oci.InvalidImage("the copied image's layers are not the registry manifest's")
            config_raw = (layout / "blobs" / "sha256" / _hex(manifest.config.digest)).read_bytes()
            if _sha256(config_raw) != manifest.config.digest:
                raise oci.InvalidImage("the image's config does not match its digest")
            config = oci.parse_config(config_raw, len(manifest.layers))
            size = 0
            left = self.config.max_image_bytes
            for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
                unpacked = self._unpack(layout, layer.digest, diff_id, left)
                size += unpacked
                left -= unpacked
        except (oci.InvalidImage, LayerRefused, LayerTooLarge) as exc:
            raise refused(exc) from None
        image = StoredImage(
            digest=digest,
            layers=tuple(layer.digest for layer in manifest.layers),
            env=config.env,
            working_dir=config.working_dir,
            user=config.user,
            size=size,
            public=public,
            accounts=(),
            references=(),
            last_used=time.time(),
        )
        self._save(image)
        return image

    def _unpack(self, layout: Path, digest: str, diff_id: str, limit: int) -> int:
        """Unpack one layer unless the store has it; its unpacked size."""
        target = self.layer_dir(digest)
        blob = layout / "blobs" / "sha256" / _hex(digest)
        size_file = self.root / "layers" / f".{_hex(digest)}.size"
        if target.is_dir():
            return int(size_file.read_text()) if size_file.exists() else 0
        partial = target.with_name(f".partial-{_hex(digest)}-{uuid.uuid4().hex}")
        partial.mkdir(mode=0o755)
        self.idmap.own(partial)
        try:
            unpacked = unpack_layer(blob, partial, self.idmap, digest=digest, diff_id=diff_id, max_bytes=limit)
            os.rename(partial, target)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # another pull unpacked it first
                return 0
            raise
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        size_file.write_text(str(unpacked.bytes))
        os.replace(blob, self.root / "blobs" / "sha256" / _hex(digest))
        return unpacked.bytes
