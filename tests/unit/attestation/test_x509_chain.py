"""X.509 chain rules and enrollment precedence (protocol.md §5), sans I/O, generated PKIs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from tests.unit.attestation.x509_pki import NOW, Issued, device, intermediate, issue, root

from opendps.app.devpki import Profile
from opendps.attestation.x509 import to_pem
from opendps.attestation.x509_chain import (
    MAX_PATH_LENGTH,
    MAX_PRESENTED_CERTIFICATES,
    ChainRejected,
    GroupAnchors,
    X509Match,
    build_path,
    check_leaf,
    enrollment_anchors,
    match_enrollment,
)
from opendps.model.certificate import CaCertificate
from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    EnrollmentGroup,
    EnrollmentSpec,
    IndividualEnrollment,
    ProvisioningStatus,
    SymmetricKeyAttestation,
    X509Attestation,
    X509CaReferences,
    X509CertificatePair,
)


def x509_spec(attestation: X509Attestation, *, disabled: bool = False) -> EnrollmentSpec:
    status = ProvisioningStatus.DISABLED if disabled else ProvisioningStatus.ENABLED
    return EnrollmentSpec(
        Attestation(AttestationType.X509, x509=attestation), provisioning_status=status
    )


def individual(rid: str, leaf: Issued, *, disabled: bool = False) -> IndividualEnrollment:
    pair = X509CertificatePair(primary=leaf.record)
    return IndividualEnrollment(
        "i", rid, x509_spec(X509Attestation(client_certificates=pair), disabled=disabled)
    )


def signed_group(group_id: str, ca: Issued, *, disabled: bool = False) -> GroupAnchors:
    pair = X509CertificatePair(primary=ca.record)
    group = EnrollmentGroup(
        "i", group_id, x509_spec(X509Attestation(signing_certificates=pair), disabled=disabled)
    )
    return GroupAnchors(group, (ca.certificate,))


def ca_record(name: str, ca: Issued, *, verified: bool) -> CaCertificate:
    info = ca.record.info
    return CaCertificate(
        instance_id="i",
        name=name,
        certificate_pem=ca.pem,
        subject=info.subject_name,
        sha1_thumbprint=info.sha1_thumbprint,
        sha256_thumbprint=info.sha256_thumbprint,
        not_before_utc=info.not_before_utc,
        not_after_utc=info.not_after_utc,
        is_verified=verified,
    )


def referenced_group(group_id: str, ca: CaCertificate, *, disabled: bool = False) -> GroupAnchors:
    group = EnrollmentGroup(
        "i",
        group_id,
        x509_spec(X509Attestation(ca_references=X509CaReferences(ca.name)), disabled=disabled),
    )
    x509_attestation = group.spec.attestation.x509
    return GroupAnchors(group, enrollment_anchors(x509_attestation, {ca.name.lower(): ca}))


def decide(
    chain: Sequence[x509.Certificate],
    rid: str,
    *,
    individual_enrollment: IndividualEnrollment | None = None,
    groups: Sequence[GroupAnchors] = (),
    now: datetime = NOW,
) -> X509Match:
    check_leaf(chain, rid, now)
    anchors = [a for g in groups for a in g.anchors]
    return match_enrollment(build_path(chain, now, anchors), individual_enrollment, groups)


@pytest.fixture
def pki() -> tuple[Issued, Issued]:
    top = root()
    return top, intermediate(top)


def test_a_leaf_signed_through_an_intermediate_matches_the_intermediates_group(
    pki: tuple[Issued, Issued],
) -> None:
    top, mid = pki
    leaf = device("dev-1", mid)

    match = decide([leaf.certificate, mid.certificate], "dev-1", groups=[signed_group("g", mid)])

    assert match.enrollment.spec.attestation.type is AttestationType.X509
    assert match.signing_certificate == mid.certificate and match.leaf == leaf.certificate


def test_a_root_the_device_did_not_send_completes_the_path_to_the_roots_group(
    pki: tuple[Issued, Issued],
) -> None:
    top, mid = pki
    leaf = device("dev-1", mid)

    match = decide([leaf.certificate, mid.certificate], "dev-1", groups=[signed_group("g", top)])

    assert match.signing_certificate == top.certificate


def test_the_cn_compares_case_insensitively(pki: tuple[Issued, Issued]) -> None:
    _, mid = pki
    leaf = device("Sensor-ABC", mid)

    check_leaf([leaf.certificate], "sensor-abc", NOW)


def test_a_leaf_whose_cn_is_another_registration_id_is_refused(
    pki: tuple[Issued, Issued],
) -> None:
    _, mid = pki
    leaf = device("dev-1", mid)

    with pytest.raises(ChainRejected, match="CN"):
        check_leaf([leaf.certificate, mid.certificate], "dev-2", NOW)


def test_no_certificate_is_refused() -> None:
    with pytest.raises(ChainRejected, match="no client certificate"):
        check_leaf([], "dev-1", NOW)


def test_an_expired_leaf_is_refused(pki: tuple[Issued, Issued]) -> None:
    _, mid = pki
    leaf = device("dev-1", mid, now=NOW - timedelta(days=60))

    with pytest.raises(ChainRejected, match="expired"):
        check_leaf([leaf.certificate], "dev-1", NOW)


def test_a_leaf_not_yet_valid_is_refused(pki: tuple[Issued, Issued]) -> None:
    _, mid = pki
    leaf = device("dev-1", mid, now=NOW + timedelta(days=2))

    with pytest.raises(ChainRejected, match="not yet valid"):
        check_leaf([leaf.certificate], "dev-1", NOW)


def test_an_expired_intermediate_on_the_path_is_refused() -> None:
    top = root()
    old = issue("Old Intermediate", top, profile=Profile.CA, now=NOW - timedelta(days=1),
                validity=timedelta(hours=1))  # fmt: skip
    leaf = device("dev-1", old, now=NOW - timedelta(days=1))

    with pytest.raises(ChainRejected, match="CA certificate has expired"):
        decide([leaf.certificate, old.certificate], "dev-1", groups=[signed_group("g", top)])


def test_a_leaf_signed_by_another_ca_matches_no_group(pki: tuple[Issued, Issued]) -> None:
    top, mid = pki
    other = intermediate(root("Other Root"), "Other Intermediate")
    leaf = device("dev-1", other)

    with pytest.raises(ChainRejected, match="no enrollment"):
        decide([leaf.certificate, other.certificate], "dev-1", groups=[signed_group("g", mid)])


def test_a_certificate_with_the_issuers_name_but_another_key_is_not_its_issuer(
    pki: tuple[Issued, Issued],
) -> None:
    top, mid = pki
    impostor = intermediate(top)  # same subject name, different key
    leaf = device("dev-1", impostor)

    with pytest.raises(ChainRejected, match="no enrollment"):
        decide([leaf.certificate, mid.certificate], "dev-1", groups=[signed_group("g", mid)])


def test_an_intermediate_without_the_ca_flag_is_refused(pki: tuple[Issued, Issued]) -> None:
    top, _ = pki
    not_a_ca = issue("Not A CA", top, profile=Profile.CLIENT)
    leaf = device("dev-1", not_a_ca)

    with pytest.raises(ChainRejected, match="not a CA"):
        decide([leaf.certificate, not_a_ca.certificate], "dev-1", groups=[signed_group("g", top)])


def test_a_group_referencing_an_unverified_ca_does_not_match(
    pki: tuple[Issued, Issued],
) -> None:
    top, mid = pki
    leaf = device("dev-1", mid)
    unverified = ca_record("my-root", top, verified=False)

    with pytest.raises(ChainRejected, match="no enrollment"):
        decide([leaf.certificate, mid.certificate], "dev-1",
               groups=[referenced_group("g", unverified)])  # fmt: skip


def test_a_group_referencing_a_verified_ca_matches(pki: tuple[Issued, Issued]) -> None:
    top, mid = pki
    leaf = device("dev-1", mid)
    verified = ca_record("My-Root", top, verified=True)

    match = decide([leaf.certificate, mid.certificate], "dev-1",
                   groups=[referenced_group("g", verified)])  # fmt: skip

    assert match.signing_certificate == top.certificate


def test_a_disabled_ca_backed_group_decides_without_falling_through_to_the_root_group(
    pki: tuple[Issued, Issued],
) -> None:
    top, mid = pki
    leaf = device("dev-1", mid)
    verified = ca_record("mid", mid, verified=True)
    groups = [referenced_group("specific", verified, disabled=True), signed_group("broad", top)]

    match = decide([leaf.certificate, mid.certificate], "dev-1", groups=groups)

    assert isinstance(match.enrollment, EnrollmentGroup)
    assert match.enrollment.enrollment_group_id == "specific"
    assert match.enrollment.spec.provisioning_status is ProvisioningStatus.DISABLED


def test_the_intermediates_group_takes_precedence_over_the_roots_group(
    pki: tuple[Issued, Issued],
) -> None:
    top, mid = pki
    leaf = device("dev-1", mid)
    groups = [signed_group("root-group", top), signed_group("mid-group", mid)]

    match = decide([leaf.certificate, mid.certificate, top.certificate], "dev-1", groups=groups)

    assert isinstance(match.enrollment, EnrollmentGroup)
    assert match.enrollment.enrollment_group_id == "mid-group"


def test_a_disabled_individual_enrollment_beats_an_enabled_group(
    pki: tuple[Issued, Issued],
) -> None:
    _, mid = pki
    leaf = device("dev-1", mid)

    match = decide([leaf.certificate, mid.certificate], "dev-1",
                   individual_enrollment=individual("dev-1", leaf, disabled=True),
                   groups=[signed_group("g", mid)])  # fmt: skip

    assert isinstance(match.enrollment, IndividualEnrollment)
    assert match.enrollment.spec.provisioning_status is ProvisioningStatus.DISABLED


def test_a_self_signed_leaf_matches_its_individual_enrollment() -> None:
    leaf = device("dev-1")

    match = decide([leaf.certificate], "dev-1", individual_enrollment=individual("dev-1", leaf))

    assert match.signing_certificate is None


def test_the_secondary_certificate_of_an_individual_enrollment_matches() -> None:
    primary, secondary = device("dev-1"), device("dev-1")
    enrollment = IndividualEnrollment(
        "i", "dev-1", x509_spec(X509Attestation(client_certificates=X509CertificatePair(
            primary.record, secondary.record))))  # fmt: skip

    match = decide([secondary.certificate], "dev-1", individual_enrollment=enrollment)

    assert match.leaf == secondary.certificate


def test_another_certificate_with_the_same_cn_does_not_match_the_individual_enrollment() -> None:
    enrolled, other = device("dev-1"), device("dev-1")

    with pytest.raises(ChainRejected, match="not the enrolled client certificate"):
        decide([other.certificate], "dev-1", individual_enrollment=individual("dev-1", enrolled))


def test_a_chain_on_a_symmetric_key_individual_enrollment_is_refused() -> None:
    leaf = device("dev-1")
    spec = EnrollmentSpec(
        Attestation(AttestationType.SYMMETRIC_KEY, symmetric_key=SymmetricKeyAttestation("a", "b"))
    )

    with pytest.raises(ChainRejected, match="not X.509"):
        decide([leaf.certificate], "dev-1", individual_enrollment=IndividualEnrollment(
            "i", "dev-1", spec))  # fmt: skip


def test_extra_unrelated_certificates_in_the_chain_are_ignored(
    pki: tuple[Issued, Issued],
) -> None:
    top, mid = pki
    leaf = device("dev-1", mid)
    expired_stranger = issue("Stranger", profile=Profile.CA, now=NOW - timedelta(days=90))
    chain = [leaf.certificate, expired_stranger.certificate, root("Noise").certificate,
             mid.certificate, mid.certificate]  # fmt: skip

    match = decide(chain, "dev-1", groups=[signed_group("g", top)])

    assert build_path(chain, NOW, [top.certificate]).certificates == (
        leaf.certificate, mid.certificate, top.certificate)  # fmt: skip
    assert match.signing_certificate == top.certificate


def test_a_path_longer_than_allowed_is_refused() -> None:
    cas = [root()]
    for level in range(MAX_PATH_LENGTH):
        cas.append(intermediate(cas[-1], f"Level {level}"))
    leaf = device("dev-1", cas[-1])
    chain = [leaf.certificate, *(ca.certificate for ca in reversed(cas))]

    with pytest.raises(ChainRejected, match="longer than"):
        decide(chain, "dev-1", groups=[signed_group("g", cas[0])])


def test_more_certificates_than_a_device_may_present_are_refused() -> None:
    leaf = device("dev-1")
    noise = root("Noise").certificate

    with pytest.raises(ChainRejected, match="too many"):
        check_leaf([leaf.certificate] + [noise] * MAX_PRESENTED_CERTIFICATES, "dev-1", NOW)


def test_unverified_references_are_anchors_only_when_asked_for() -> None:
    top = root()
    unverified = ca_record("r", top, verified=False)
    attestation = X509Attestation(ca_references=X509CaReferences("R", "missing"))

    assert enrollment_anchors(attestation, {"r": unverified}) == ()
    assert enrollment_anchors(attestation, {"r": unverified}, verified_only=False) == (
        top.certificate,
    )
    assert to_pem(top.certificate) == unverified.certificate_pem
