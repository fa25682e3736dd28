"""The `x509` sub-result of a registration state (protocol.md §1.4)."""

from __future__ import annotations

from tests.unit.attestation.x509_pki import device, intermediate, root

from opendps.engine.api import RegistrationResult
from opendps.model.enrollment import AttestationType
from opendps.model.registration import RegistrationStatus
from opendps.transports.bodies import registration_state_body


def test_a_group_member_gets_its_certificate_its_group_and_the_signing_ca() -> None:
    mid = intermediate(root())
    leaf = device("dev-1", mid)
    result = RegistrationResult(
        "dev-1",
        RegistrationStatus.ASSIGNED,
        attestation_type=AttestationType.X509,
        enrollment_group_id="fleet",
        certificate_info=leaf.record.info,
        signing_certificate_info=mid.record.info,
    )

    x509 = registration_state_body(result)["x509"]

    assert list(x509) == ["certificateInfo", "enrollmentGroupId", "signingCertificateInfo"]
    assert x509["certificateInfo"]["sha256Thumbprint"] == leaf.record.info.sha256_thumbprint
    assert x509["certificateInfo"]["notAfterUtc"].endswith("Z")
    assert x509["certificateInfo"]["version"] == 3
    assert x509["signingCertificateInfo"]["subjectName"] == mid.record.info.subject_name


def test_a_result_without_certificate_info_keeps_only_the_group() -> None:
    result = RegistrationResult(
        "dev-1", RegistrationStatus.DISABLED, attestation_type=AttestationType.X509,
        enrollment_group_id="fleet",
    )  # fmt: skip

    assert registration_state_body(result)["x509"] == {"enrollmentGroupId": "fleet"}
