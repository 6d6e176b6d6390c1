"""A real OCI registry on loopback (Debian's docker-registry), and images built here to push to it.

Images are written as OCI layouts by the tests themselves (a busybox-static
layer, an Env, a WorkingDir) and pushed with skopeo: nothing comes from the
network.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
BUSYBOX_APPLETS = ("sh", "cat", "echo", "env", "pwd", "ls", "id", "sleep", "true", "stat", "readlink", "head")


@dataclass
class Entry:
    """One tar entry of a test layer."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    mode: int = 0o644
    linkname: str = ""
    uid: int = 0
    gid: int = 0
    devmajor: int = 0
    devminor: int = 0


def tar_layer(entries: list[Entry], *, compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.type
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.linkname = entry.linkname
            info.devmajor, info.devminor = entry.devmajor, entry.devminor
            info.mtime = 1_700_000_000
            info.size = len(entry.data) if entry.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(entry.data) if entry.type == tarfile.REGTYPE else None)
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def busybox_layer(*extra: Entry) -> bytes:
    entries = [
        Entry("bin/", type=tarfile.DIRTYPE, mode=0o755),
        Entry("bin/busybox", BUSYBOX.read_bytes(), mode=0o755),
        *(Entry(f"bin/{applet}", type=tarfile.SYMTYPE, linkname="busybox") for applet in BUSYBOX_APPLETS),
        Entry("root/", type=tarfile.DIRTYPE, mode=0o700),
        Entry("etc/", type=tarfile.DIRTYPE, mode=0o755),
        Entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        *extra,
    ]
    return tar_layer(entries)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class BuiltImage:
    """An image as an OCI layout: layers (compressed tar), and its config's process defaults."""

    layers: list[bytes]
    env: list[str] = field(default_factory=lambda: ["PATH=/bin"])
    working_dir: str = ""
    user: str = ""

    def write(self, layout: Path, tag: str = "latest") -> str:
        """Write the layout; the manifest's digest."""
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)

        def put(data: bytes) -> str:
            digest = _digest(data)
            (blobs / digest.split(":")[1]).write_bytes(data)
            return digest

        diff_ids = [_digest(gzip.decompress(layer)) for layer in self.layers]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": self.env, "WorkingDir": self.working_dir, "User": self.user},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": put(config),
                    "size": len(config),
                },
                "layers": [
                    {"mediaType": LAYER_TYPE, "digest": put(layer), "size": len(layer)} for layer in self.layers
                ],
            }
        ).encode()
        digest = put(manifest)
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "size": len(manifest),
                    "annotations": {"org.opencontainers.image.ref.name": tag},
                }
            ],
        }
        (layout / "index.json").write_text(json.dumps(index))
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        return digest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    process: subprocess.Popen[bytes]
    login: tuple[str, str] | None = None
    ca_file: Path | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://{self.host}"

    async def push(self, image: BuiltImage, name: str, tmp_path: Path) -> str:
        """Push ``image`` as ``<host>/<name>``; the manifest's digest."""
        layout = tmp_path / f"layout-{time.monotonic_ns()}"
        digest = image.write(layout)
        argv = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest"]
        if self.login is not None:
            argv.insert(2, f"--dest-creds={self.login[0]}:{self.login[1]}")
        await trio.run_process([*argv, f"docker://{self.host}/{name}"], capture_stdout=True, capture_stderr=True)
        return digest


def start_registry(directory: Path, *, htpasswd: Path | None = None, tls: tuple[Path, Path] | None = None) -> Registry:
    """Start docker-registry on a free loopback port; waits until it answers."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(directory / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "test", "path": str(htpasswd)}}
    if tls is not None:
        config["http"] = {**config["http"], "tls": {"certificate": str(tls[0]), "key": str(tls[1])}}  # type: ignore[dict-item]
    (directory / "config.yml").write_text(json.dumps(config))  # YAML reads JSON
    process = subprocess.Popen(
        ["docker-registry", "serve", str(directory / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "registry.log", "wb"),  # noqa: SIM115 - kept for the process's life
    )
    scheme = "https" if tls else "http"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{scheme}://127.0.0.1:{port}/v2/", verify=False, timeout=1)
            return Registry(f"127.0.0.1:{port}", process)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"docker-registry did not start: {(directory / 'registry.log').read_text()[-500:]}")


def stop_registry(registry: Registry) -> None:
    registry.process.kill()
    registry.process.wait()


def running_registry(directory: Path, **options: object) -> Iterator[Registry]:
    """A fixture body: the registry for the test, stopped after it."""
    registry = start_registry(directory, **options)  # type: ignore[arg-type]
    try:
        yield registry
    finally:
        stop_registry(registry)
