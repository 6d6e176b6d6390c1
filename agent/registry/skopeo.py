"""Registry transport through skopeo: manifests and image copies, auth, TLS, mirrors, retries.

The registry protocol (token and basic auth, redirects, retries, mirrors by
``registries.conf``, digest checks of every blob) is skopeo's, a tool the
field keeps well; this module only says what to fetch and turns its
failures into the errors users see. Each call runs skopeo with an
environment of its own: a generated ``registries.conf`` (the operator's
mirrors), a private HOME (so no root's ``auth.json`` is ever read), and
the pull's credentials, if any, in a 0600 auth file that lives as long as
the call (never on a command line, where ``ps`` shows it).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from agent.config import RegistryHostConfig
from chaser.wire import errors
from chaser.wire.image_reference import ImageReference, parse_reference

log = logging.getLogger(__name__)

_RETRIES = "2"
_ERROR_TAIL = 400


@dataclass(frozen=True)
class Credentials:
    """A registry login for one pull: a password or a token as the password."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


def _insecure(host: str) -> str:
    """Plain HTTP allowed (TOML's spelling): only for a registry on loopback."""
    return "true" if parse_reference(f"{host.split('/')[0]}/x").on_loopback else "false"


def registries_conf(hosts: Mapping[str, RegistryHostConfig]) -> str:
    """containers-registries.conf(5) for the operator's mirrors (loopback ones over plain HTTP)."""
    lines = ["unqualified-search-registries = []", ""]
    for host, config in sorted(hosts.items()):
        if not config.mirrors:
            continue
        lines += ["[[registry]]", f'prefix = "{host}"', f'location = "{host}"', f"insecure = {_insecure(host)}"]
        for mirror in config.mirrors:
            lines += ["[[registry.mirror]]", f'location = "{mirror}"', f"insecure = {_insecure(mirror)}"]
        lines.append("")
    return "\n".join(lines)


def classify(reference: ImageReference, stderr: str) -> errors.ApiError:
    """The error a user sees for what skopeo said went wrong."""
    said = stderr.strip().splitlines()[-1][-_ERROR_TAIL:] if stderr.strip() else "no output"
    lowered = stderr.lower()
    if any(s in lowered for s in ("manifest unknown", "name unknown", "not found", "status 404")):
        return errors.NotFound(f"image {reference} not found in its registry", code="image_not_found")
    if any(s in lowered for s in ("unauthorized", "authentication required", "denied", "status 401", "status 403")):
        return errors.Forbidden(
            f"registry {reference.domain} refused access to {reference.repository}: {said}", code="registry_auth_failed"
        )
    return errors.Unavailable(f"registry {reference.domain} could not be reached: {said}", code="registry_unavailable")


class Skopeo:
    """skopeo with this agent's registry settings; one per agent."""

    def __init__(self, work_dir: Path, hosts: Mapping[str, RegistryHostConfig]) -> None:
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._conf = work_dir / "registries.conf"
        self._conf.write_text(registries_conf(hosts))
        self._home = work_dir / "home"
        self._home.mkdir(exist_ok=True, mode=0o700)
        # Every configured CA in one directory: skopeo trusts them beside the system's.
        self._certs: Path | None = None
        cas = {host: c.ca_file for host, c in hosts.items() if c.ca_file is not None}
        self._ca_hosts = frozenset(cas)
        if cas:
            self._certs = work_dir / "certs"
            shutil.rmtree(self._certs, ignore_errors=True)
            self._certs.mkdir(mode=0o700)
            for host, ca_file in cas.items():
                shutil.copyfile(ca_file, self._certs / f"{host.replace(':', '_')}.crt")

    def _env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self._home),
            "XDG_RUNTIME_DIR": str(self._home),
        }

    def _transport_flags(self, reference: ImageReference, prefix: str) -> list[str]:
        flags = []
        if reference.on_loopback and reference.domain not in self._ca_hosts:
            # As Docker does: loopback may speak plain HTTP (or unverified TLS),
            # unless the operator gave a CA for it, which is then checked.
            flags.append(f"--{prefix}tls-verify=false")
        if self._certs is not None:
            flags.append(f"--{prefix}cert-dir={self._certs}")
        return flags

    async def _run(
        self, reference: ImageReference, argv: list[str], credentials: Credentials | None, timeout: float
    ) -> bytes:
        with tempfile.TemporaryDirectory(dir=self.work_dir) as private:
            auth = Path(private) / "auth.json"
            entries = {}
            if credentials is not None:
                token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
                entries = {reference.domain: {"auth": token}}
            fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"auths": entries}, f)
            flag = "--authfile" if argv[0] == "inspect" else "--src-authfile"
            try:
                with trio.fail_after(timeout):
                    done = await trio.run_process(
                        # --registries-conf: skopeo 1.9 reads no CONTAINERS_REGISTRIES_CONF.
                        ["skopeo", f"--registries-conf={self._conf}", *argv, f"{flag}={auth}"],
                        env=self._env(),
                        stdin=subprocess.DEVNULL,
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                    )
            except trio.TooSlowError:
                raise errors.Unavailable(
                    f"registry {reference.domain} did not answer within {timeout:g}s", code="registry_unavailable"
                ) from None
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")
            log.info("skopeo %s failed for %s: %s", argv[0], reference, stderr.strip()[-_ERROR_TAIL:])
            raise classify(reference, stderr)
        return done.stdout

    async def manifest(
        self, reference: ImageReference, credentials: Credentials | None, timeout: float, digest: str | None = None
    ) -> bytes:
        """The raw manifest (or index) ``reference`` names, or the one of ``digest`` in its repository."""
        target = f"{reference.repository}@{digest}" if digest else str(reference)
        argv = [
            "inspect",
            "--raw",
            f"--retry-times={_RETRIES}",
            *self._transport_flags(reference, ""),
            f"docker://{target}",
        ]
        return await self._run(reference, argv, credentials, timeout)

    async def copy(
        self, reference: ImageReference, digest: str, layout: Path, credentials: Credentials | None, timeout: float
    ) -> None:
        """Copy the image ``digest`` of the reference's repository into the OCI layout ``layout``.

        Blobs already in the layout are not fetched again: the store links
        the layers it holds there first.
        """
        argv = [
            "copy",
            "--quiet",
            f"--retry-times={_RETRIES}",
            *self._transport_flags(reference, "src-"),
            f"docker://{reference.repository}@{digest}",
            f"oci:{layout}:image",
        ]
        await self._run(reference, argv, credentials, timeout)
