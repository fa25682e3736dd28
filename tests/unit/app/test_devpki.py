from __future__ import annotations

import ipaddress
import socket
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from opendps.app.devpki import (
    SERVER_VALIDITY,
    DevPki,
    PkiError,
    Profile,
    ensure_dev_pki,
    issue_certificate,
    load_certificates,
    new_private_key,
    server_hosts,
)

START = datetime(2025, 1, 1, tzinfo=UTC)


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def _server_cert(pki: DevPki) -> x509.Certificate:
    return load_certificates(pki.server_certificate)[0]


def test_server_certificate_covers_local_names_and_public_hosts(tmp_path: Path) -> None:
    hosts = server_hosts(["dps.example.com", "10.1.2.3"])
    pki = ensure_dev_pki(tmp_path, hosts, FixedClock(START))
    dns, ips = _sans(_server_cert(pki))
    assert {"localhost", socket.gethostname(), "dps.example.com"} <= dns
    assert {"127.0.0.1", "::1", "10.1.2.3"} <= ips


def test_server_hosts_keep_order_and_drop_duplicates() -> None:
    hosts = server_hosts(["LOCALHOST", "dps.example.com", "dps.example.com"])
    assert hosts[:3] == ["localhost", "127.0.0.1", "::1"]
    assert hosts.count("dps.example.com") == 1 and "LOCALHOST" not in hosts


def test_keys_are_ecdsa_p256_and_private_files_are_owner_only(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path, server_hosts([]), FixedClock(START))
    for cert in [
        *load_certificates(pki.server_certificate),
        *load_certificates(pki.ca_certificate),
    ]:
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert _mode(pki.ca_key) == 0o600
    assert _mode(pki.server_key) == 0o600
    assert _mode(pki.ca_certificate) == 0o644


def test_server_pem_holds_the_leaf_then_the_ca_and_the_ca_signed_it(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path, server_hosts([]), FixedClock(START))
    leaf, ca = load_certificates(pki.server_certificate)
    assert ca == load_certificates(pki.ca_certificate)[0]
    leaf.verify_directly_issued_by(ca)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True


def test_second_run_reuses_the_ca_and_the_server_certificate(tmp_path: Path) -> None:
    first = ensure_dev_pki(tmp_path, server_hosts([]), FixedClock(START))
    ca_bytes = first.ca_certificate.read_bytes()
    server_bytes = first.server_certificate.read_bytes()
    ensure_dev_pki(tmp_path, server_hosts([]), FixedClock(START + timedelta(days=1)))
    assert first.ca_certificate.read_bytes() == ca_bytes
    assert first.server_certificate.read_bytes() == server_bytes


def test_a_new_public_host_reissues_the_server_certificate_under_the_same_ca(
    tmp_path: Path,
) -> None:
    pki = ensure_dev_pki(tmp_path, server_hosts([]), FixedClock(START))
    ca_bytes = pki.ca_certificate.read_bytes()
    ensure_dev_pki(tmp_path, server_hosts(["new.example"]), FixedClock(START))
    assert "new.example" in _sans(_server_cert(pki))[0]
    assert pki.ca_certificate.read_bytes() == ca_bytes


def test_a_server_certificate_near_expiry_is_renewed(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path, server_hosts([]), FixedClock(START))
    old_serial = _server_cert(pki).serial_number
    later = START + SERVER_VALIDITY - timedelta(days=10)
    ensure_dev_pki(tmp_path, server_hosts([]), FixedClock(later))
    renewed = _server_cert(pki)
    assert renewed.serial_number != old_serial
    assert renewed.not_valid_after_utc > later + timedelta(days=300)


def test_a_ca_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path, server_hosts([]), FixedClock(START))
    pki.ca_key.unlink()
    with pytest.raises(PkiError, match="must both exist"):
        ensure_dev_pki(tmp_path, server_hosts([]), FixedClock(START))


def test_client_certificates_carry_the_registration_id_as_common_name() -> None:
    ca_key = new_private_key()
    ca = issue_certificate(
        common_name="test CA",
        public_key=ca_key.public_key(),
        issuer=None,
        signing_key=ca_key,
        profile=Profile.CA,
        now=START,
        validity=timedelta(days=30),
    )
    device_key = new_private_key()
    device = issue_certificate(
        common_name="device-001",
        public_key=device_key.public_key(),
        issuer=(ca, ca_key),
        signing_key=ca_key,
        profile=Profile.CLIENT,
        now=START,
        validity=timedelta(days=30),
    )
    device.verify_directly_issued_by(ca)
    assert device.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "device-001"
    eku = device.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_ip_looking_hosts_become_ip_sans(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path, ["localhost", "::1"], FixedClock(START))
    san = _server_cert(pki).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("::1") in san.get_values_for_type(x509.IPAddress)
    assert "::1" not in san.get_values_for_type(x509.DNSName)
