"""CA proof of possession with CAs generated per test (RSA and EC)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from opendps.attestation.ca_proof import (
    describe_certificate,
    generate_verification_code,
    load_certificate,
    verify_proof_of_possession,
)
from opendps.model.errors import (
    CERTIFICATE_VERIFICATION_FAILED,
    INVALID_CERTIFICATE_FORMAT,
    DpsError,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: PrivateKey


def _new_key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _issue(
    common_name: str,
    *,
    issuer: Issued | None = None,
    kind: str = "ec",
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=30),
    sign_with: PrivateKey | None = None,
) -> Issued:
    key = _new_key(kind)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    signer = sign_with or (issuer.key if issuer else key)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def _pem(issued: Issued) -> str:
    return issued.certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(params=["rsa", "ec"])
def ca(request: pytest.FixtureRequest) -> Issued:
    return _issue("Contoso Root CA", kind=request.param)


def test_verification_codes_are_48_uppercase_hex_digits_and_differ() -> None:
    first, second = generate_verification_code(), generate_verification_code()
    assert len(first) == 48
    assert first == first.upper()
    int(first, 16)
    assert first != second


def test_proof_signed_by_the_ca_with_the_code_as_cn_is_accepted(ca: Issued) -> None:
    code = generate_verification_code()
    proof = _issue(code, issuer=ca)
    verify_proof_of_possession(ca.certificate, proof.certificate, code, NOW)


def test_proof_with_another_cn_is_refused_with_400009(ca: Issued) -> None:
    code = generate_verification_code()
    proof = _issue("not-the-code", issuer=ca)
    with pytest.raises(DpsError) as raised:
        verify_proof_of_possession(ca.certificate, proof.certificate, code, NOW)
    assert raised.value.error_code == CERTIFICATE_VERIFICATION_FAILED
    assert "CN" in raised.value.message


def test_proof_signed_by_another_key_under_the_ca_name_is_refused(ca: Issued) -> None:
    code = generate_verification_code()
    kind = "rsa" if isinstance(ca.key, rsa.RSAPrivateKey) else "ec"
    impostor_key = _new_key(kind)
    proof = _issue(code, issuer=ca, sign_with=impostor_key)
    with pytest.raises(DpsError) as raised:
        verify_proof_of_possession(ca.certificate, proof.certificate, code, NOW)
    assert raised.value.error_code == CERTIFICATE_VERIFICATION_FAILED
    assert "signature" in raised.value.message


def test_proof_issued_by_a_different_ca_is_refused(ca: Issued) -> None:
    code = generate_verification_code()
    other_ca = _issue("Other CA")
    proof = _issue(code, issuer=other_ca)
    with pytest.raises(DpsError) as raised:
        verify_proof_of_possession(ca.certificate, proof.certificate, code, NOW)
    assert raised.value.error_code == CERTIFICATE_VERIFICATION_FAILED


def test_expired_proof_is_refused(ca: Issued) -> None:
    code = generate_verification_code()
    proof = _issue(
        code, issuer=ca, not_before=NOW - timedelta(days=10), not_after=NOW - timedelta(days=1)
    )
    with pytest.raises(DpsError) as raised:
        verify_proof_of_possession(ca.certificate, proof.certificate, code, NOW)
    assert "validity" in raised.value.message


def test_proof_not_yet_valid_is_refused(ca: Issued) -> None:
    code = generate_verification_code()
    proof = _issue(code, issuer=ca, not_before=NOW + timedelta(hours=1))
    with pytest.raises(DpsError):
        verify_proof_of_possession(ca.certificate, proof.certificate, code, NOW)


def test_expired_ca_cannot_be_proven() -> None:
    old_ca = _issue(
        "Old CA", not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1)
    )
    code = generate_verification_code()
    proof = _issue(code, issuer=old_ca)
    with pytest.raises(DpsError) as raised:
        verify_proof_of_possession(old_ca.certificate, proof.certificate, code, NOW)
    assert "CA certificate" in raised.value.message


def test_certificate_loads_from_pem_base64_der_and_base64_pem(ca: Issued) -> None:
    pem = _pem(ca)
    der = ca.certificate.public_bytes(serialization.Encoding.DER)
    forms = [pem, base64.b64encode(der).decode(), base64.b64encode(pem.encode()).decode()]
    for form in forms:
        assert load_certificate(form) == ca.certificate


@pytest.mark.parametrize(
    "text", ["", "   ", "not a certificate", base64.b64encode(b"junk").decode()]
)
def test_text_that_is_not_a_certificate_is_refused_with_400006(text: str) -> None:
    with pytest.raises(DpsError) as raised:
        load_certificate(text)
    assert raised.value.error_code == INVALID_CERTIFICATE_FORMAT


def test_upload_carrying_a_private_key_is_refused_without_echoing_it(ca: Issued) -> None:
    key_pem = ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    for text in (_pem(ca) + key_pem, base64.b64encode((_pem(ca) + key_pem).encode()).decode()):
        with pytest.raises(DpsError) as raised:
            load_certificate(text)
        assert raised.value.error_code == INVALID_CERTIFICATE_FORMAT
        assert "MII" not in raised.value.message


def test_description_gives_subject_and_uppercase_thumbprints(ca: Issued) -> None:
    facts = describe_certificate(ca.certificate)
    assert facts.subject == "CN=Contoso Root CA"
    assert facts.sha1_thumbprint == ca.certificate.fingerprint(hashes.SHA1()).hex().upper()
    assert len(facts.sha256_thumbprint) == 64
    assert facts.certificate_pem == _pem(ca)
    assert facts.not_after_utc == NOW + timedelta(days=30)
