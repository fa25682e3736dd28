"""The development PKI: a local CA and the server certificate it signs (ECDSA P-256).

`opendps serve` creates both in the data dir on first start, so TLS works without any
setup; operators trust `ca.pem` (docs/operations.md). The helpers below are general enough
for the certificate CLI to issue test CAs and device certificates too.

Keys are ECDSA P-256 throughout: handshakes are about 20x cheaper than RSA-2048
(ARCHITECTURE §5), and every official SDK accepts them.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from opendps.engine.ports import Clock

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
# The server certificate followed by the CA, so clients that were given only the CA can build
# the chain from what the server sends.
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"

# A dev CA lives as long as the data dir; ten years means nobody meets its expiry in practice.
CA_VALIDITY = timedelta(days=3650)
# 397 days is the longest server-certificate lifetime every TLS stack accepts (Apple and
# Chrome cap trusted server certificates near 398 days); the server renews it well before.
SERVER_VALIDITY = timedelta(days=397)
# A server certificate this close to expiry is reissued at the next start.
SERVER_RENEW_BEFORE = timedelta(days=30)
# Certificates start slightly in the past so a device whose clock lags still accepts them.
BACKDATE = timedelta(minutes=5)
# Names the dev server certificate always carries: the ones a client on this machine uses.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

# Keys the certificate tooling issues with: ECDSA P-256 by default, RSA on request (`opendps
# cert ... --rsa`) for devices whose TLS stacks lack ECDSA.
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644


class PkiError(Exception):
    """The data dir's PKI files are unusable (message says which file and what to do)."""


class Profile(enum.Enum):
    """What a certificate is for: decides its basic constraints, key usage and EKU."""

    CA = "ca"
    SERVER = "server"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class DevPki:
    """Paths of the dev PKI files in a data dir."""

    ca_certificate: Path
    ca_key: Path
    server_certificate: Path
    server_key: Path

    @classmethod
    def in_dir(cls, data_dir: Path) -> DevPki:
        return cls(
            ca_certificate=data_dir / CA_CERT_FILE,
            ca_key=data_dir / CA_KEY_FILE,
            server_certificate=data_dir / SERVER_CERT_FILE,
            server_key=data_dir / SERVER_KEY_FILE,
        )


# -- keys and certificates ------------------------------------------------------------------


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OpenDPS"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def subject_alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses (anything that parses as an IP becomes an IP SAN)."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue_certificate(
    *,
    common_name: str,
    public_key: PublicKey,
    issuer: tuple[x509.Certificate, PrivateKey] | None,
    signing_key: PrivateKey,
    profile: Profile,
    now: datetime,
    validity: timedelta,
    hosts: Sequence[str] = (),
    ca_path_length: int | None = 0,
) -> x509.Certificate:
    """Build and sign one certificate.

    `issuer` is None for a self-signed CA (then `signing_key` is its own key); otherwise
    `signing_key` is the issuer's key. `hosts` become subjectAltNames (server certificates).
    Every certificate carries subject and authority key identifiers, which strict verifiers
    (Python 3.13's default X.509 strict mode) require.
    """
    subject = _name(common_name)
    issuer_name = issuer[0].subject if issuer else subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(issuer, public_key), critical=False)
    )
    for extension, critical in _profile_extensions(profile, ca_path_length):
        builder = builder.add_extension(extension, critical=critical)
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def _authority_key_identifier(
    issuer: tuple[x509.Certificate, PrivateKey] | None,
    own_key: PublicKey,
) -> x509.AuthorityKeyIdentifier:
    if issuer is None:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(own_key)
    ski = issuer[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _profile_extensions(
    profile: Profile, ca_path_length: int | None
) -> list[tuple[x509.ExtensionType, bool]]:
    if profile is Profile.CA:
        return [
            (x509.BasicConstraints(ca=True, path_length=ca_path_length), True),
            (_key_usage(cert_sign=True), True),
        ]
    purpose = (
        ExtendedKeyUsageOID.SERVER_AUTH
        if profile is Profile.SERVER
        else ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(cert_sign=False), True),
        (x509.ExtendedKeyUsage([purpose]), False),
    ]


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# -- files ----------------------------------------------------------------------------------


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data`; the file never exists half-written or with a looser mode."""
    # Write beside the target and rename, so a crash never leaves half a key; the file is
    # created with its final mode, so a private key is never readable by others, even briefly.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private_key(path: Path, key: PrivateKey) -> None:
    """PKCS#8 PEM, unencrypted, mode 0600."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomically(path, pem, PRIVATE_FILE_MODE)


def write_certificates(path: Path, certificates: Sequence[x509.Certificate]) -> None:
    """PEM certificates, leaf first."""
    pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certificates)
    write_atomically(path, pem, PUBLIC_FILE_MODE)


def write_secret_text(path: Path, text: str) -> None:
    """A small secret (such as the admin key) as a 0600 text file."""
    write_atomically(path, text.encode("ascii") + b"\n", PRIVATE_FILE_MODE)


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise PkiError(f"cannot load private key {path}: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an ECDSA private key")
    return key


def load_certificates(path: Path) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as err:
        raise PkiError(f"cannot load certificates from {path}: {err}") from None
    return certificates


# -- the data dir's dev PKI -----------------------------------------------------------------


def server_hosts(public_hosts: Iterable[str]) -> list[str]:
    """Every name the dev server certificate must cover, without duplicates, in order."""
    wanted = [*LOCAL_HOSTS, socket.gethostname(), *public_hosts]
    seen: set[str] = set()
    hosts: list[str] = []
    for host in wanted:
        if host and host.lower() not in seen:
            seen.add(host.lower())
            hosts.append(host)
    return hosts


def ensure_dev_pki(data_dir: Path, hosts: Sequence[str], clock: Clock) -> DevPki:
    """Create or reuse the dev CA and server certificate in `data_dir`.

    The CA is created once and then always reused (clients trust it). The server certificate
    is reissued when it is missing, does not cover every name in `hosts`, was not signed by
    this CA, does not match its key, or expires within SERVER_RENEW_BEFORE.
    Raises PkiError when existing files cannot be used.
    """
    pki = DevPki.in_dir(data_dir)
    now = clock.now()
    ca_cert, ca_key = _ensure_ca(pki, now)
    if not _server_certificate_is_usable(pki, ca_cert, hosts, now):
        key = new_private_key()
        cert = issue_certificate(
            common_name=hosts[0],
            public_key=key.public_key(),
            issuer=(ca_cert, ca_key),
            signing_key=ca_key,
            profile=Profile.SERVER,
            now=now,
            validity=SERVER_VALIDITY,
            hosts=hosts,
        )
        write_private_key(pki.server_key, key)
        write_certificates(pki.server_certificate, [cert, ca_cert])
    return pki


def _ensure_ca(pki: DevPki, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if pki.ca_certificate.exists() or pki.ca_key.exists():
        if not (pki.ca_certificate.exists() and pki.ca_key.exists()):
            raise PkiError(
                f"{pki.ca_certificate} and {pki.ca_key} must both exist; remove the one left "
                "to create a new dev CA (clients must then trust the new ca.pem)"
            )
        ca_cert = load_certificates(pki.ca_certificate)[0]
        ca_key = load_private_key(pki.ca_key)
        if ca_cert.public_key() != ca_key.public_key():
            raise PkiError(f"{pki.ca_key} does not match {pki.ca_certificate}")
        return ca_cert, ca_key
    ca_key = new_private_key()
    # A random suffix tells apart the CAs of different data dirs in a trust store.
    ca_cert = issue_certificate(
        common_name=f"OpenDPS development CA {secrets.token_hex(4)}",
        public_key=ca_key.public_key(),
        issuer=None,
        signing_key=ca_key,
        profile=Profile.CA,
        now=now,
        validity=CA_VALIDITY,
    )
    write_private_key(pki.ca_key, ca_key)
    write_certificates(pki.ca_certificate, [ca_cert])
    return ca_cert, ca_key


def _server_certificate_is_usable(
    pki: DevPki, ca_cert: x509.Certificate, hosts: Sequence[str], now: datetime
) -> bool:
    if not (pki.server_certificate.exists() and pki.server_key.exists()):
        return False
    try:
        cert = load_certificates(pki.server_certificate)[0]
        key = load_private_key(pki.server_key)
        cert.verify_directly_issued_by(ca_cert)
    except (PkiError, InvalidSignature, ValueError, TypeError, IndexError):
        return False
    if cert.public_key() != key.public_key():
        return False
    if cert.not_valid_after_utc - now < SERVER_RENEW_BEFORE:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(subject_alt_names(hosts)) <= set(san)
