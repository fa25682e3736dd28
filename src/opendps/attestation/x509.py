"""X.509 certificates as enrollments carry them: reading the three wire forms, and their info.

The service API receives enrolled certificates in three forms, all used by real clients
(protocol.md §5): PEM text (Node individual enrollments), base64 of PEM text (Node group e2e)
and base64 of DER (C#). Every form is normalised to PEM and described by the
`X509CertificateInfo` Azure returns in `info`. Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from opendps.model.enrollment import X509Certificate, X509CertificateInfo
from opendps.model.errors import INVALID_CERTIFICATE_FORMAT, DpsError

__all__ = [
    "MAX_CERTIFICATE_TEXT_LENGTH",
    "certificate_info",
    "format_name",
    "load_certificate",
    "parse_certificate",
    "to_pem",
]

# A certificate is one to a few KiB even with long extension lists (RSA-8192 and many SANs stay
# under 16 KiB); 64 KiB of text bounds the work done on hostile input with room to spare.
MAX_CERTIFICATE_TEXT_LENGTH = 64 * 1024

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
# The end of every PEM private-key header (`-----BEGIN [RSA |EC |ENCRYPTED ]PRIVATE KEY-----`).
_PRIVATE_KEY_MARKER = b"PRIVATE KEY-----"
# What cryptography raises for data that is not a well-formed certificate: ValueError for bad
# encodings, InvalidVersion for an unknown version field (raised lazily, on first access).
_MALFORMED = (ValueError, TypeError, x509.InvalidVersion)


def load_certificate(text: str) -> x509.Certificate:
    """Read one certificate given as PEM text, base64 of PEM text or base64 of DER.

    Raises DpsError(INVALID_CERTIFICATE_FORMAT) for anything else, for more than one
    certificate, and for text carrying a private key (only public certificates are enrolled).
    The message never quotes the input.
    """
    if not isinstance(text, str) or not text.strip():
        raise _bad_format("the certificate is empty")
    if len(text) > MAX_CERTIFICATE_TEXT_LENGTH:
        raise _bad_format("the certificate text is too long")
    data = text.strip().encode("utf-8", errors="replace")
    if _PEM_BEGIN not in data and _PRIVATE_KEY_MARKER not in data:
        data = _decode_base64(data)
    if _PRIVATE_KEY_MARKER in data:
        raise _bad_format("enroll only the public certificate, never a private key")
    if _PEM_BEGIN in data:
        return _load_pem(data)
    try:
        return _checked(x509.load_der_x509_certificate(data))
    except _MALFORMED:
        raise _bad_format("the data is not an X.509 certificate") from None


def _decode_base64(data: bytes) -> bytes:
    try:
        # Line breaks and spaces inside base64 are common (copied .cer files); drop them.
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _bad_format("expected PEM text, base64 of PEM text or base64 of DER") from None


def _load_pem(data: bytes) -> x509.Certificate:
    if data.count(_PEM_BEGIN) != 1:
        raise _bad_format("expected exactly one certificate")
    try:
        return _checked(x509.load_pem_x509_certificate(data))
    except _MALFORMED:
        raise _bad_format("the PEM data is not an X.509 certificate") from None


def _checked(certificate: x509.Certificate) -> x509.Certificate:
    # cryptography parses some fields lazily; touch every field `certificate_info` reads so that
    # a malformed certificate fails here, inside the caller's error handling, and nowhere later.
    certificate_info(certificate)
    return certificate


def certificate_info(certificate: x509.Certificate) -> X509CertificateInfo:
    """Azure's `X509CertificateInfo` for a certificate.

    Thumbprints are upper-case hex of the DER digests and the serial number upper-case hex, as
    Azure (.NET `X509Certificate2`) shows them; `version` is the X.509 version number (3 for v3).
    """
    # SHA-1 serves only as the certificate's name (Azure's `sha1Thumbprint`), not for security.
    return X509CertificateInfo(
        subject_name=format_name(certificate.subject),
        sha1_thumbprint=certificate.fingerprint(hashes.SHA1()).hex().upper(),
        sha256_thumbprint=certificate.fingerprint(hashes.SHA256()).hex().upper(),
        issuer_name=format_name(certificate.issuer),
        not_before_utc=certificate.not_valid_before_utc,
        not_after_utc=certificate.not_valid_after_utc,
        serial_number=_serial_hex(certificate.serial_number),
        version=certificate.version.value + 1,
    )


def format_name(name: x509.Name) -> str:
    """A distinguished name most specific first, `CN=leaf, O=Org, C=US` (the .NET form)."""
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(name.rdns))


def _serial_hex(serial: int) -> str:
    if serial < 0:  # RFC 5280 forbids it, but old certificates exist; keep the sign visible
        return "-" + _serial_hex(-serial)
    digits = f"{serial:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


def to_pem(certificate: x509.Certificate) -> str:
    """The certificate as PEM text, the one form OpenDPS stores."""
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def parse_certificate(text: str) -> X509Certificate:
    """Read an enrolled certificate (any of the three forms) into its stored record.

    Returns the normalised PEM with its info; raises DpsError(INVALID_CERTIFICATE_FORMAT).
    """
    certificate = load_certificate(text)
    return X509Certificate(certificate_pem=to_pem(certificate), info=certificate_info(certificate))


def _bad_format(reason: str) -> DpsError:
    return DpsError(INVALID_CERTIFICATE_FORMAT, f"Invalid certificate: {reason}.")
