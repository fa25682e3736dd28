"""Enrolled certificates: the three wire forms, normalisation to PEM, and X509CertificateInfo."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from opendps.attestation.x509 import (
    MAX_CERTIFICATE_TEXT_LENGTH,
    certificate_info,
    format_name,
    load_certificate,
    parse_certificate,
    to_pem,
)
from opendps.model.enrollment import X509Certificate
from opendps.model.errors import INVALID_CERTIFICATE_FORMAT, DpsError

NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2027, 1, 1, tzinfo=UTC)


def _certificate(
    common_name: str = "device-001",
    *,
    serial: int = 0x0A1B2C,
    organisation: str | None = "Contoso",
    kind: str = "ec",
    issuer_name: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organisation:
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation), *attributes]
    subject = x509.Name(attributes)
    issuer = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)])
        if issuer_name
        else subject
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


@pytest.fixture(scope="module")
def certificate() -> x509.Certificate:
    return _certificate()[0]


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def test_pem_text_is_read(certificate: x509.Certificate) -> None:
    assert load_certificate(_pem(certificate)) == certificate


def test_pem_text_with_crlf_and_surrounding_whitespace_is_read(
    certificate: x509.Certificate,
) -> None:
    text = "\r\n  " + _pem(certificate).replace("\n", "\r\n") + "\n\n"
    assert load_certificate(text) == certificate


def test_base64_of_pem_text_is_read(certificate: x509.Certificate) -> None:
    text = base64.b64encode(_pem(certificate).encode()).decode()
    assert load_certificate(text) == certificate


def test_base64_of_der_is_read(certificate: x509.Certificate) -> None:
    assert load_certificate(base64.b64encode(_der(certificate)).decode()) == certificate


def test_base64_of_der_with_line_breaks_is_read(certificate: x509.Certificate) -> None:
    encoded = base64.b64encode(_der(certificate)).decode()
    wrapped = "\n".join(encoded[i : i + 64] for i in range(0, len(encoded), 64))
    assert load_certificate(wrapped) == certificate


@pytest.mark.parametrize("form", ["pem", "base64-pem", "base64-der"])
def test_every_form_normalises_to_the_same_pem_and_info(
    certificate: x509.Certificate, form: str
) -> None:
    text = {
        "pem": _pem(certificate),
        "base64-pem": base64.b64encode(_pem(certificate).encode()).decode(),
        "base64-der": base64.b64encode(_der(certificate)).decode(),
    }[form]
    parsed = parse_certificate(text)
    assert isinstance(parsed, X509Certificate)
    assert parsed.certificate_pem == _pem(certificate)
    assert parsed.info == certificate_info(certificate)


def test_info_has_azure_thumbprints_serial_validity_and_version(
    certificate: x509.Certificate,
) -> None:
    info = certificate_info(certificate)
    assert info.sha1_thumbprint == certificate.fingerprint(hashes.SHA1()).hex().upper()
    assert info.sha256_thumbprint == certificate.fingerprint(hashes.SHA256()).hex().upper()
    assert len(info.sha256_thumbprint) == 64 and info.sha256_thumbprint.isupper()
    assert info.serial_number == "0A1B2C"
    assert info.not_before_utc == NOT_BEFORE and info.not_after_utc == NOT_AFTER
    assert info.version == 3


def test_names_are_written_most_specific_first() -> None:
    certificate, _ = _certificate("leaf-01", organisation="Contoso", issuer_name="Issuing CA")
    info = certificate_info(certificate)
    assert info.subject_name == "CN=leaf-01, O=Contoso"
    assert info.issuer_name == "CN=Issuing CA"
    assert format_name(certificate.subject) == "CN=leaf-01, O=Contoso"


def test_rsa_certificates_are_read_too() -> None:
    certificate, _ = _certificate("rsa-device", kind="rsa")
    assert parse_certificate(_pem(certificate)).info.subject_name == "CN=rsa-device, O=Contoso"


def test_to_pem_round_trips(certificate: x509.Certificate) -> None:
    assert load_certificate(to_pem(certificate)) == certificate


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "not a certificate",
        "!!!!",
        base64.b64encode(b"hello world").decode(),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        base64.b64encode(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ).decode(),
    ],
)
def test_garbage_is_refused_with_invalid_certificate_format(text: str) -> None:
    with pytest.raises(DpsError) as err:
        load_certificate(text)
    assert err.value.error_code == INVALID_CERTIFICATE_FORMAT
    assert err.value.http_status == 400


def test_a_chain_of_two_certificates_is_refused(certificate: x509.Certificate) -> None:
    other, _ = _certificate("other")
    with pytest.raises(DpsError) as err:
        load_certificate(_pem(certificate) + _pem(other))
    assert "exactly one" in err.value.message


def test_a_private_key_is_refused_and_never_quoted(certificate: x509.Certificate) -> None:
    _, key = _certificate()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    for text in (
        key_pem,
        _pem(certificate) + key_pem,
        base64.b64encode((key_pem + _pem(certificate)).encode()).decode(),
    ):
        with pytest.raises(DpsError) as err:
            load_certificate(text)
        assert (
            err.value.error_code == INVALID_CERTIFICATE_FORMAT
            and "private key" in err.value.message
        )
        assert "BEGIN" not in err.value.message and key_pem[40:80] not in err.value.message


def test_text_over_the_limit_is_refused_before_parsing(certificate: x509.Certificate) -> None:
    text = _pem(certificate) + " " * MAX_CERTIFICATE_TEXT_LENGTH
    with pytest.raises(DpsError) as err:
        load_certificate(text)
    assert "too long" in err.value.message


def test_a_non_string_is_refused() -> None:
    with pytest.raises(DpsError):
        load_certificate(b"bytes are not text")  # type: ignore[arg-type]


@given(st.text(max_size=400))
def test_arbitrary_text_gives_a_certificate_or_a_dps_error(text: str) -> None:
    try:
        parsed = parse_certificate(text)
    except DpsError as err:
        assert err.error_code == INVALID_CERTIFICATE_FORMAT
    else:
        assert parsed.certificate_pem.startswith("-----BEGIN CERTIFICATE-----")


@given(st.binary(max_size=600))
def test_arbitrary_base64_gives_a_certificate_or_a_dps_error(data: bytes) -> None:
    try:
        parse_certificate(base64.b64encode(data).decode())
    except DpsError as err:
        assert err.error_code == INVALID_CERTIFICATE_FORMAT


@given(st.integers(min_value=0, max_value=300))
def test_truncated_der_gives_a_dps_error(cut: int) -> None:
    certificate, _ = _certificate("truncated")
    der = _der(certificate)
    prefix = der[: min(cut, len(der) - 1)]
    with pytest.raises(DpsError):
        load_certificate(base64.b64encode(prefix).decode())


_FUZZ_DER = _der(_certificate("fuzzed")[0])


# Corrupting the serial can make it non-positive; cryptography still reads such certificates
# (with this warning, and may refuse them one day, which load_certificate maps to a DpsError).
@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
@given(
    st.integers(min_value=0, max_value=len(_FUZZ_DER) - 1), st.integers(min_value=0, max_value=255)
)
def test_a_corrupted_der_byte_gives_a_certificate_or_a_dps_error(index: int, value: int) -> None:
    corrupted = _FUZZ_DER[:index] + bytes([value]) + _FUZZ_DER[index + 1 :]
    try:
        parsed = parse_certificate(base64.b64encode(corrupted).decode())
    except DpsError as err:
        assert err.error_code == INVALID_CERTIFICATE_FORMAT
    else:
        assert parsed.info.sha256_thumbprint
