"""A registry serving TLS from a test CA: trusted through the operator's ``ca_file``, refused under another CA."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.config import RegistryConfig, RegistryHostConfig
from agent.registry.store import LayerStore
from agent.storage.idmap import IdMap
from chaser.wire import errors
from chaser.wire.image_reference import parse_reference
from tests.registry_support import BuiltImage, Entry, Registry, busybox_layer, running_registry


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_ca(directory: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(*[False] * 5, True, True, False, False), critical=True)  # cert and CRL sign
        .sign(key, hashes.SHA256())
    )
    return cert, key, _pem(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))


def server_cert(directory: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return (
        _pem(directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM)),
        _pem(directory / "server.key", key_pem),
    )


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[tuple[Registry, Path, Path]]:
    ca, ca_key, ca_file = make_ca(tmp_path, "test-ca")
    _, _, other_ca = make_ca(tmp_path, "other-ca")
    for registry in running_registry(tmp_path / "registry", tls=server_cert(tmp_path, ca, ca_key)):
        registry.ca_file = ca_file
        yield registry, ca_file, other_ca


async def test_a_tls_registry_is_checked_against_the_configured_ca(
    tls_registry: tuple[Registry, Path, Path], tmp_path: Path
) -> None:
    registry, ca_file, other_ca = tls_registry
    digest = await registry.push(BuiltImage([busybox_layer(Entry("tls", b"yes\n"))]), "secure/app:1", tmp_path)
    reference = parse_reference(f"{registry.host}/secure/app:1")

    def store(name: str, ca: Path) -> LayerStore:
        hosts = {registry.host: RegistryHostConfig(ca_file=ca)}
        return LayerStore(tmp_path / name, IdMap(), RegistryConfig(allowed=[registry.host], hosts=hosts, tag_ttl=0))

    pulled = await store("trusting", ca_file).pull(reference, None, None)
    assert pulled.image.digest == digest and pulled.fetched_layers == 1

    # Under a CA that did not sign the registry's certificate: refused, saying why, nothing kept.
    with pytest.raises(errors.Unavailable, match="certificate") as refused:
        await store("distrusting", other_ca).pull(reference, None, None)
    assert refused.value.code == "registry_unavailable"
    assert list((tmp_path / "distrusting" / "layers").iterdir()) == []
