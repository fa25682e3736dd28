"""X.509 device attestation: validate the presented chain and find the deciding enrollment.

Rules (protocol.md §5): the leaf's subject CN is the registration ID (compared
case-insensitively; the device's spelling is kept); every certificate the decision rests on is
within its validity period; each link of the path is signed by the next certificate
(`verify_directly_issued_by`), and every issuer in the path is a CA (basicConstraints CA=true,
keyCertSign when keyUsage is present). Certificates the device sent that are not on the path
from its leaf are ignored. The path may end with an enrolled certificate the device did not
send (a group's root signing certificate or an uploaded CA): a device typically sends leaf +
intermediates and the service holds the root (clients.md, Python `X509(cert_file, ...)`).

Order of precedence (§5): the individual enrollment for the leaf first; else the group whose
certificate is the first CA above the leaf, then the next one up. The first entry found decides:
an enabled entry provisions, a disabled one refuses (the engine answers `disabled`); there is
no fall-through to a less specific entry.

Pure: the engine reads enrollments and CA certificates and passes them in, with `now`.
Every refusal raises `ChainRejected(reason)`; the reason is for logs, never for the device.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from opendps.attestation.x509 import load_certificate
from opendps.model.certificate import CaCertificate
from opendps.model.enrollment import (
    AttestationType,
    EnrollmentGroup,
    IndividualEnrollment,
    X509Attestation,
    X509CertificatePair,
)
from opendps.model.errors import DpsError

__all__ = [
    "MAX_PATH_LENGTH",
    "MAX_PRESENTED_CERTIFICATES",
    "CertificatePath",
    "ChainRejected",
    "GroupAnchors",
    "X509Match",
    "build_path",
    "check_leaf",
    "enrollment_anchors",
    "match_enrollment",
    "sha256_thumbprint",
]

# Real device PKIs are leaf → one or two intermediates → root (Azure's samples: 3 levels). Eight
# certificates from leaf to anchor leaves room for deep corporate hierarchies while bounding the
# signature checks a device can make us do per registration.
MAX_PATH_LENGTH = 8
# Enrolled certificates are parsed from their stored PEM on every X.509 registration; caching
# the parsed (immutable) certificates by PEM text saves that work. 1,024 covers Azure's 100
# X.509 groups x 2 certificates plus 25 CAs per instance for a few busy instances.
PARSED_CERTIFICATE_CACHE_SIZE = 1024
# What a TLS client may present: a path plus a few unrelated extras (some stacks send their
# whole trust bundle). More is refused before any signature is checked.
MAX_PRESENTED_CERTIFICATES = 16


class ChainRejected(Exception):
    """The chain does not authenticate the device; `reason` goes to logs and metrics only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CertificatePath:
    """Leaf first, then each issuer in turn; `certificates[1:]` are CAs, most specific first."""

    certificates: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def authorities(self) -> tuple[x509.Certificate, ...]:
        return self.certificates[1:]


@dataclass(frozen=True, slots=True)
class GroupAnchors:
    """An X.509 group and the certificates that may back it (signing certificates and the
    *verified* CA certificates it references), as the engine read them."""

    group: EnrollmentGroup
    anchors: tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True)
class X509Match:
    """The enrollment that decides, the device's leaf, and the CA that matched (groups and
    CA-backed individual enrollments; None for a matched client certificate)."""

    enrollment: IndividualEnrollment | EnrollmentGroup
    leaf: x509.Certificate
    signing_certificate: x509.Certificate | None = None


def sha256_thumbprint(certificate: x509.Certificate) -> str:
    """Upper-case hex of the DER's SHA-256, the form `X509CertificateInfo` shows."""
    return certificate.fingerprint(hashes.SHA256()).hex().upper()


# -- the chain ------------------------------------------------------------------------------


def check_leaf(
    presented: Sequence[x509.Certificate], registration_id: str, now: datetime
) -> x509.Certificate:
    """What needs no enrollment: a leaf, its CN = the registration ID, its validity."""
    if not presented:
        raise ChainRejected("no client certificate")
    if len(presented) > MAX_PRESENTED_CERTIFICATES:
        raise ChainRejected("too many certificates presented")
    leaf = presented[0]
    names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise ChainRejected("leaf certificate must have exactly one subject CN")
    common_name = names[0].value
    if not isinstance(common_name, str) or common_name.lower() != registration_id.lower():
        raise ChainRejected("leaf certificate CN is not the registration ID")
    _check_validity(leaf, now, "leaf certificate")
    return leaf


def build_path(
    presented: Sequence[x509.Certificate],
    now: datetime,
    anchors: Iterable[x509.Certificate] = (),
) -> CertificatePath:
    """The path from the leaf up through the presented certificates, then at most one enrolled
    anchor the device did not send. Call `check_leaf` first."""
    pool = _unique(presented[1:])
    path = [presented[0]]
    while not _is_self_issued(path[-1]):
        issuer = _issuer_in(path[-1], pool)
        if issuer is None:
            break
        pool.remove(issuer)
        _append_issuer(path, issuer, now)
    if not _is_self_issued(path[-1]):
        anchor = _issuer_in(path[-1], _unique(anchors))
        if anchor is not None:
            _append_issuer(path, anchor, now)
    return CertificatePath(tuple(path))


def _append_issuer(path: list[x509.Certificate], issuer: x509.Certificate, now: datetime) -> None:
    if len(path) >= MAX_PATH_LENGTH:
        raise ChainRejected(f"certificate path longer than {MAX_PATH_LENGTH}")
    _check_authority(issuer)
    _check_validity(issuer, now, "CA certificate")
    path.append(issuer)


def _issuer_in(
    certificate: x509.Certificate, candidates: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    """The candidate that signed `certificate` (name and signature), if any."""
    for candidate in candidates:
        if candidate.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue  # same name, other key: not this certificate's issuer
        return candidate
    return None


def _check_authority(certificate: x509.Certificate) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise ChainRejected("issuer certificate has no basicConstraints") from None
    if not constraints.ca:
        raise ChainRejected("issuer certificate is not a CA (basicConstraints CA=false)")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise ChainRejected("issuer certificate's keyUsage lacks keyCertSign")


def _check_validity(certificate: x509.Certificate, now: datetime, what: str) -> None:
    if now < certificate.not_valid_before_utc:
        raise ChainRejected(f"{what} is not yet valid")
    if now > certificate.not_valid_after_utc:
        raise ChainRejected(f"{what} has expired")


def _is_self_issued(certificate: x509.Certificate) -> bool:
    return certificate.subject == certificate.issuer


def _unique(certificates: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    seen: set[bytes] = set()
    unique: list[x509.Certificate] = []
    for certificate in certificates:
        digest = certificate.fingerprint(hashes.SHA256())
        if digest not in seen:
            seen.add(digest)
            unique.append(certificate)
    return unique


# -- enrollments ----------------------------------------------------------------------------


def enrollment_anchors(
    attestation: X509Attestation | None,
    ca_certificates: Mapping[str, CaCertificate],
    *,
    verified_only: bool = True,
) -> tuple[x509.Certificate, ...]:
    """The CA certificates that may back an enrollment: its signing certificates, and the CA
    certificates its references name that exist in the instance (and are verified, §5)."""
    if attestation is None:
        return ()
    pems: list[str] = []
    if attestation.signing_certificates is not None:
        pems.extend(_pair_pems(attestation.signing_certificates))
    references = attestation.ca_references
    if references is not None:
        for name in (references.primary, references.secondary):
            ca = ca_certificates.get(name.lower()) if name else None
            if ca is not None and (ca.is_verified or not verified_only):
                pems.append(ca.certificate_pem)
    return tuple(_unique(_load(pem) for pem in pems))


def match_enrollment(
    path: CertificatePath,
    individual: IndividualEnrollment | None,
    groups: Sequence[GroupAnchors],
    individual_anchors: Sequence[x509.Certificate] = (),
) -> X509Match:
    """The enrollment that decides for this path (protocol.md §5 order of precedence).

    An individual enrollment for the registration ID decides alone: it must be X.509 and
    either list the leaf (primary or secondary, by SHA-256 thumbprint) or have one of
    `individual_anchors` on the path. Otherwise the first CA above the leaf that backs a group
    decides (groups sharing one CA: lowest group ID first, so the choice is stable).
    """
    if individual is not None:
        return _match_individual(path, individual, individual_anchors)
    for authority in path.authorities:
        thumbprint = sha256_thumbprint(authority)
        backed = sorted(
            (g.group for g in groups if _has_thumbprint(g.anchors, thumbprint)),
            key=lambda group: group.enrollment_group_id.lower(),
        )
        if backed:
            if backed[0].spec.attestation.type is not AttestationType.X509:
                raise ChainRejected("enrollment group is not X.509")
            return X509Match(backed[0], path.leaf, authority)
    raise ChainRejected("no enrollment for the certificate chain")


def _match_individual(
    path: CertificatePath,
    individual: IndividualEnrollment,
    anchors: Sequence[x509.Certificate],
) -> X509Match:
    attestation = individual.spec.attestation
    if attestation.type is not AttestationType.X509 or attestation.x509 is None:
        raise ChainRejected("individual enrollment is not X.509")
    clients = attestation.x509.client_certificates
    if clients is not None:
        leaf = sha256_thumbprint(path.leaf)
        if any(sha256_thumbprint(_load(pem)) == leaf for pem in _pair_pems(clients)):
            return X509Match(individual, path.leaf)
        raise ChainRejected("leaf certificate is not the enrolled client certificate")
    for authority in path.authorities:
        if _has_thumbprint(anchors, sha256_thumbprint(authority)):
            return X509Match(individual, path.leaf, authority)
    raise ChainRejected("certificate chain does not reach the enrollment's CA")


def _has_thumbprint(certificates: Iterable[x509.Certificate], thumbprint: str) -> bool:
    return any(sha256_thumbprint(c) == thumbprint for c in certificates)


def _pair_pems(pair: X509CertificatePair) -> list[str]:
    return [c.certificate_pem for c in (pair.primary, pair.secondary) if c is not None]


def _load(pem: str) -> x509.Certificate:
    try:
        return _parse_enrolled(pem)
    except DpsError:  # stored certificates were validated on the way in; never expected
        raise ChainRejected("an enrolled certificate cannot be read") from None


@functools.lru_cache(maxsize=PARSED_CERTIFICATE_CACHE_SIZE)
def _parse_enrolled(pem: str) -> x509.Certificate:
    return load_certificate(pem)
