"""Throwaway X.509 PKIs for tests: ECDSA P-256 certificates built with `cryptography`.

`build_test_pki(directory)` makes everything the TLS tests need (a server CA and server
certificate for localhost/127.0.0.1, a device CA → intermediate → device chain, a self-signed
and an expired device) and writes the PEM files the server and clients load. `client_context`
builds a stdlib `ssl` client context, the peer the TLS tests talk to (as mitmproxy's `SSLTest`).

Test-only code: nothing here is hardened. Imported as `tests.pki` by the TLS tests.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALIDITY = dt.timedelta(days=2)


@dataclass(frozen=True)
class Identity:
    """A certificate, its private key, and the certificates its holder sends after it."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def common_name(self) -> str:
        return str(self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    def sent_chain(self) -> tuple[x509.Certificate, ...]:
        """What a TLS peer holding this identity sends: the leaf, then `chain` in order."""
        return (self.certificate, *self.chain)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write `<stem>.pem` (leaf then chain) and `<stem>.key`; return both paths."""
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(b"".join(pem(c) for c in self.sent_chain()))
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _build(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_name: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool,
    not_after: dt.datetime | None = None,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    end = not_after or now + _VALIDITY
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, end) - dt.timedelta(days=1))
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_ca(common_name: str) -> Identity:
    key = new_key()
    return Identity(_build(common_name, key, _name(common_name), key, is_ca=True), key)


def issue(
    issuer: Identity,
    common_name: str,
    *,
    is_ca: bool = False,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
) -> Identity:
    """A certificate signed by `issuer`; its holder sends `issuer`'s sent chain after it,
    except a self-signed root (clients never need to send the root)."""
    key = new_key()
    certificate = _build(
        common_name,
        key,
        issuer.certificate.subject,
        issuer.key,
        is_ca=is_ca,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
    )
    is_root = issuer.certificate.issuer == issuer.certificate.subject
    return Identity(certificate, key, () if is_root else issuer.sent_chain())


def self_signed(common_name: str, *, expired: bool = False) -> Identity:
    key = new_key()
    not_after = dt.datetime.now(dt.UTC) - dt.timedelta(days=3) if expired else None
    certificate = _build(
        common_name, key, _name(common_name), key, is_ca=False, not_after=not_after
    )
    return Identity(certificate, key)


@dataclass(frozen=True)
class TestPki:
    """Every identity the TLS tests use, and the files written for them."""

    __test__ = False  # not a pytest test class

    directory: Path
    server_ca: Identity
    server: Identity
    server_cert_path: Path
    server_key_path: Path
    server_ca_path: Path
    device_root: Identity
    device_intermediate: Identity
    device: Identity  # sends (device, device_intermediate)
    self_signed_device: Identity
    expired_device: Identity

    def client_files(self, identity: Identity, stem: str) -> tuple[Path, Path]:
        return identity.write(self.directory, stem)


def build_test_pki(directory: Path) -> TestPki:
    server_ca = make_ca("OpenDPS Test Server CA")
    server = issue(server_ca, "localhost", dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    server_cert_path, server_key_path = server.write(directory, "server")
    server_ca_path = directory / "server-ca.pem"
    server_ca_path.write_bytes(pem(server_ca.certificate))
    device_root = make_ca("OpenDPS Test Device Root")
    device_intermediate = issue(device_root, "OpenDPS Test Device Intermediate", is_ca=True)
    return TestPki(
        directory=directory,
        server_ca=server_ca,
        server=server,
        server_cert_path=server_cert_path,
        server_key_path=server_key_path,
        server_ca_path=server_ca_path,
        device_root=device_root,
        device_intermediate=device_intermediate,
        device=issue(device_intermediate, "device-1"),
        self_signed_device=self_signed("self-signed-device"),
        expired_device=self_signed("expired-device", expired=True),
    )


def client_context(
    pki: TestPki,
    *,
    identity: Identity | None = None,
    version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A stdlib client context trusting the test server CA, optionally with a client identity
    and pinned to one TLS version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki.server_ca_path)
    if version is not None:
        context.minimum_version = version
        context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    if identity is not None:
        stem = f"client-{identity.certificate.serial_number:x}"
        context.load_cert_chain(*pki.client_files(identity, stem))
    return context
