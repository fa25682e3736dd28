"""CA certificates: reading uploads and checking proof of possession (protocol.md §5).

An uploaded CA is *unverified* until its owner proves they hold its private key: the service
hands out a random verification code, the owner issues a certificate whose subject CN is that
code, signed by the CA, and uploads it; the signature is checked with the CA's public key.
Everything here is pure: the caller passes the current time and stores the results.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from opendps.attestation.x509 import certificate_info, load_certificate, to_pem
from opendps.model.errors import CERTIFICATE_VERIFICATION_FAILED, DpsError

# Uploads are read with the same loader as enrolled certificates (PEM, base64 PEM, base64 DER).
__all__ = [
    "CertificateFacts",
    "describe_certificate",
    "generate_verification_code",
    "load_certificate",
    "verify_proof_of_possession",
]

# 24 random bytes, written as 48 upper-case hex digits: the length of Azure's codes, and well
# inside the 64-character limit X.509 puts on a CN (RFC 5280 ub-common-name).
VERIFICATION_CODE_BYTES = 24


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What the admin API stores and shows about an uploaded certificate."""

    certificate_pem: str
    subject: str
    sha1_thumbprint: str
    sha256_thumbprint: str
    not_before_utc: datetime
    not_after_utc: datetime


def generate_verification_code() -> str:
    """A fresh, unguessable code for the proof certificate's CN."""
    return secrets.token_hex(VERIFICATION_CODE_BYTES).upper()


def describe_certificate(certificate: x509.Certificate) -> CertificateFacts:
    """The normalised PEM, subject and thumbprints (upper-case hex, as Azure shows them)."""
    info = certificate_info(certificate)
    return CertificateFacts(
        certificate_pem=to_pem(certificate),
        subject=info.subject_name,
        sha1_thumbprint=info.sha1_thumbprint,
        sha256_thumbprint=info.sha256_thumbprint,
        not_before_utc=info.not_before_utc,
        not_after_utc=info.not_after_utc,
    )


def verify_proof_of_possession(
    ca: x509.Certificate, proof: x509.Certificate, verification_code: str, now: datetime
) -> None:
    """Check that `proof` proves possession of the CA's private key (protocol.md §5).

    The proof's subject CN must equal `verification_code`, it must be issued by the CA (issuer
    name = CA subject, signature verifying with the CA public key: RSA, EC or EdDSA), and both
    certificates must be valid at `now`. Returns None on success; raises DpsError(400009) with
    the first reason that failed.
    """
    if _common_name(proof) != verification_code:
        raise _not_proven("its subject CN is not the verification code")
    try:
        proof.verify_directly_issued_by(ca)
    except ValueError:
        # Issuer name differs, or the signature algorithm does not fit the CA's key type.
        raise _not_proven("it was not issued by this CA") from None
    except InvalidSignature:
        raise _not_proven("its signature does not verify with the CA's public key") from None
    except TypeError:
        raise _not_proven("its signature algorithm is not supported") from None
    moment = now.astimezone(UTC)
    if not proof.not_valid_before_utc <= moment <= proof.not_valid_after_utc:
        raise _not_proven("it is outside its validity period")
    if not ca.not_valid_before_utc <= moment <= ca.not_valid_after_utc:
        raise _not_proven("the CA certificate is outside its validity period")


def _common_name(certificate: x509.Certificate) -> str | None:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def _not_proven(reason: str) -> DpsError:
    return DpsError(
        CERTIFICATE_VERIFICATION_FAILED,
        f"The verification certificate does not prove possession of the CA: {reason}.",
    )
