"""Generated PKIs for the X.509 attestation tests (ECDSA P-256, built with devpki).

`Pki` issues roots, intermediates and device leaves at a fixed `NOW`, so validity tests move
the clock instead of waiting. Test-only code, shared by unit and engine integration tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from opendps.app.devpki import Profile, issue_certificate, new_private_key
from opendps.attestation.x509 import certificate_info, to_pem
from opendps.model.enrollment import X509Certificate

NOW = datetime(2026, 1, 1, tzinfo=UTC)
VALIDITY = timedelta(days=30)


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def record(self) -> X509Certificate:
        """The certificate as an enrollment stores it."""
        return X509Certificate(to_pem(self.certificate), certificate_info(self.certificate))

    @property
    def pem(self) -> str:
        return to_pem(self.certificate)


def issue(
    common_name: str,
    issuer: Issued | None = None,
    *,
    profile: Profile = Profile.CLIENT,
    now: datetime = NOW,
    validity: timedelta = VALIDITY,
    path_length: int | None = None,
) -> Issued:
    key = new_private_key()
    certificate = issue_certificate(
        common_name=common_name,
        public_key=key.public_key(),
        issuer=(issuer.certificate, issuer.key) if issuer else None,
        signing_key=issuer.key if issuer else key,
        profile=profile,
        now=now,
        validity=validity,
        ca_path_length=path_length,
    )
    return Issued(certificate, key)


def root(name: str = "Test Root") -> Issued:
    return issue(name, profile=Profile.CA)


def intermediate(issuer: Issued, name: str = "Test Intermediate") -> Issued:
    return issue(name, issuer, profile=Profile.CA)


def device(registration_id: str, issuer: Issued | None = None, **kwargs: object) -> Issued:
    """A device leaf (self-signed when `issuer` is None)."""
    return issue(registration_id, issuer, **kwargs)  # type: ignore[arg-type]
