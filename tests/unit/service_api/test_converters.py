"""Converters between wire models and records: attestation rules, key and certificate
redaction, and round trips of enrollments, groups and registration states."""

from __future__ import annotations

import base64
import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.tpm_keys import EK_A as EK
from tests.tpm_keys import SRK_A as SRK

from opendps.model import enrollment as records
from opendps.model.enrollment import AttestationType, ProvisioningStatus
from opendps.model.errors import INVALID_BODY, INVALID_CERTIFICATE_FORMAT, DpsError
from opendps.model.hub import AllocationPolicy
from opendps.model.registration import RegistrationState, RegistrationStatus, Substatus
from opendps.service_api import converters, schemas

CREATED = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
UPDATED = datetime(2026, 3, 2, 11, 30, 0, tzinfo=UTC)
KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(32, 96))).decode()


def _pem(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(CREATED)
        .not_valid_after(UPDATED.replace(year=2030))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def device_pem() -> str:
    return _pem("device-x509")


@pytest.fixture(scope="module")
def ca_pem() -> str:
    return _pem("Contoso Root")


def _keys() -> Any:
    counter = itertools.count()
    return lambda: base64.b64encode(bytes([next(counter)]) * 64).decode()


def _attestation(body: dict[str, Any]) -> schemas.AttestationMechanism:
    return schemas.parse_object(schemas.AttestationMechanism, body)


def _error(call: Any) -> DpsError:
    with pytest.raises(DpsError) as err:
        call()
    return err.value


# -- attestation: wire -> record ---------------------------------------------------------------------


def test_symmetric_key_enrollment_without_keys_gets_generated_keys() -> None:
    new_key = _keys()
    for body in ({"type": "symmetricKey"}, {"type": "symmetricKey", "symmetricKey": {}}):
        record = converters.attestation_from_wire(
            _attestation(body), kind="individual", existing=None, new_key=new_key
        )
        assert record.symmetric_key is not None
        assert record.symmetric_key.primary_key != record.symmetric_key.secondary_key
        assert len(base64.b64decode(record.symmetric_key.primary_key)) == 64


def test_given_symmetric_keys_are_stored_as_sent() -> None:
    wire = _attestation(
        {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY_A, "secondaryKey": KEY_B}}
    )
    record = converters.attestation_from_wire(wire, kind="group", existing=None, new_key=_keys())
    assert record.symmetric_key == records.SymmetricKeyAttestation(KEY_A, KEY_B)


def test_an_update_without_keys_keeps_the_stored_keys() -> None:
    existing = records.Attestation(
        AttestationType.SYMMETRIC_KEY, symmetric_key=records.SymmetricKeyAttestation(KEY_A, KEY_B)
    )
    record = converters.attestation_from_wire(
        _attestation({"type": "symmetricKey", "symmetricKey": {}}),
        kind="individual",
        existing=existing,
        new_key=_keys(),
    )
    assert record.symmetric_key == existing.symmetric_key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("not base64!", "base64"),
        (base64.b64encode(b"short").decode(), "16 to 64"),
        (base64.b64encode(bytes(65)).decode(), "16 to 64"),
    ],
)
def test_invalid_symmetric_keys_are_refused(key: str, reason: str) -> None:
    wire = _attestation({"type": "symmetricKey", "symmetricKey": {"primaryKey": key}})
    err = _error(
        lambda: converters.attestation_from_wire(
            wire, kind="individual", existing=None, new_key=_keys()
        )
    )
    assert err.error_code == INVALID_BODY and reason in err.message and key not in err.message


def test_tpm_attestation_needs_an_endorsement_key() -> None:
    for body in ({"type": "tpm"}, {"type": "tpm", "tpm": {"endorsementKey": ""}}):
        err = _error(
            lambda body=body: converters.attestation_from_wire(
                _attestation(body), kind="individual", existing=None, new_key=_keys()
            )
        )
        assert "endorsementKey" in err.message


def test_tpm_attestation_is_stored_for_individual_enrollments() -> None:
    wire = _attestation({"type": "tpm", "tpm": {"endorsementKey": EK, "storageRootKey": SRK}})
    record = converters.attestation_from_wire(
        wire, kind="individual", existing=None, new_key=_keys()
    )
    assert record.tpm == records.TpmAttestation(EK, SRK)


def test_tpm_endorsement_keys_must_be_base64() -> None:
    wire = _attestation({"type": "tpm", "tpm": {"endorsementKey": "%%%"}})
    err = _error(
        lambda: converters.attestation_from_wire(
            wire, kind="individual", existing=None, new_key=_keys()
        )
    )
    assert "base64" in err.message


@pytest.mark.parametrize(
    ("kind", "type_"), [("group", "tpm"), ("individual", "none"), ("group", "none")]
)
def test_attestation_types_the_enrollment_kind_cannot_use_are_refused(
    kind: converters.EnrollmentKind, type_: str
) -> None:
    wire = _attestation({"type": type_, "tpm": {"endorsementKey": EK}})
    err = _error(
        lambda: converters.attestation_from_wire(wire, kind=kind, existing=None, new_key=_keys())
    )
    assert err.error_code == INVALID_BODY and type_ in err.message


def test_individual_x509_reads_client_certificates_and_computes_info(device_pem: str) -> None:
    wire = _attestation(
        {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": device_pem}}}}
    )
    record = converters.attestation_from_wire(
        wire, kind="individual", existing=None, new_key=_keys()
    )
    assert record.x509 is not None and record.x509.client_certificates is not None
    primary = record.x509.client_certificates.primary
    assert primary is not None and primary.certificate_pem == device_pem
    assert primary.info.subject_name == "CN=device-x509"
    assert record.x509.client_certificates.secondary is None


def test_group_x509_reads_base64_signing_certificates(ca_pem: str) -> None:
    encoded = base64.b64encode(ca_pem.encode()).decode()
    wire = _attestation(
        {
            "type": "x509",
            "x509": {
                "signingCertificates": {
                    "primary": {"certificate": encoded},
                    "secondary": {"certificate": ca_pem},
                }
            },
        }
    )
    record = converters.attestation_from_wire(wire, kind="group", existing=None, new_key=_keys())
    assert record.x509 is not None and record.x509.signing_certificates is not None
    pair = record.x509.signing_certificates
    assert pair.primary is not None and pair.secondary is not None
    assert pair.primary.certificate_pem == pair.secondary.certificate_pem == ca_pem


def test_group_x509_ca_references_are_read() -> None:
    wire = _attestation({"type": "x509", "x509": {"caReferences": {"primary": "root-ca"}}})
    record = converters.attestation_from_wire(wire, kind="group", existing=None, new_key=_keys())
    assert record.x509 == records.X509Attestation(
        ca_references=records.X509CaReferences("root-ca", None)
    )


@pytest.mark.parametrize(
    ("kind", "x509_body"),
    [
        ("individual", {}),
        ("group", {}),
        ("individual", {"signingCertificates": {"primary": {"certificate": "x"}}}),
        ("individual", {"caReferences": {"primary": "root-ca"}}),
        ("group", {"clientCertificates": {"primary": {"certificate": "x"}}}),
        (
            "group",
            {
                "signingCertificates": {"primary": {"certificate": "x"}},
                "caReferences": {"primary": "root-ca"},
            },
        ),
    ],
)
def test_x509_attestation_needs_exactly_one_shape_fitting_the_kind(
    kind: converters.EnrollmentKind, x509_body: dict[str, Any]
) -> None:
    wire = _attestation({"type": "x509", "x509": x509_body})
    err = _error(
        lambda: converters.attestation_from_wire(wire, kind=kind, existing=None, new_key=_keys())
    )
    assert err.error_code == INVALID_BODY and "exactly one" in err.message


def test_x509_without_its_section_or_primary_is_refused() -> None:
    for body in (
        {"type": "x509"},
        {"type": "x509", "x509": {"clientCertificates": {}}},
        {"type": "x509", "x509": {"clientCertificates": {"primary": {}}}},
    ):
        err = _error(
            lambda body=body: converters.attestation_from_wire(
                _attestation(body), kind="individual", existing=None, new_key=_keys()
            )
        )
        assert err.error_code == INVALID_BODY


def test_a_garbage_certificate_is_refused_naming_its_slot() -> None:
    wire = _attestation(
        {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": "garbage"}}}}
    )
    err = _error(
        lambda: converters.attestation_from_wire(wire, kind="group", existing=None, new_key=_keys())
    )
    assert (
        err.error_code == INVALID_CERTIFICATE_FORMAT
        and "signingCertificates.primary" in err.message
    )


def test_an_update_echoing_only_info_keeps_the_stored_certificate(device_pem: str) -> None:
    first = converters.attestation_from_wire(
        _attestation(
            {
                "type": "x509",
                "x509": {"clientCertificates": {"primary": {"certificate": device_pem}}},
            }
        ),
        kind="individual",
        existing=None,
        new_key=_keys(),
    )
    echoed = schemas.dump(converters.attestation_to_wire(first, full=False))
    assert "certificate" not in echoed["x509"]["clientCertificates"]["primary"]
    again = converters.attestation_from_wire(
        _attestation(echoed), kind="individual", existing=first, new_key=_keys()
    )
    assert again == first


# -- attestation: record -> wire -------------------------------------------------------------------


def test_full_attestation_carries_keys_and_redacted_attestation_does_not() -> None:
    attestation = records.Attestation(
        AttestationType.SYMMETRIC_KEY, symmetric_key=records.SymmetricKeyAttestation(KEY_A, KEY_B)
    )
    assert schemas.dump(converters.attestation_to_wire(attestation, full=True)) == {
        "type": "symmetricKey",
        "symmetricKey": {"primaryKey": KEY_A, "secondaryKey": KEY_B},
    }
    redacted = schemas.dump(converters.attestation_to_wire(attestation, full=False))
    assert redacted == {"type": "symmetricKey", "symmetricKey": {}}
    assert KEY_A not in json.dumps(redacted)


def test_certificate_info_is_written_in_azure_form(device_pem: str) -> None:
    attestation = converters.attestation_from_wire(
        _attestation(
            {
                "type": "x509",
                "x509": {"clientCertificates": {"primary": {"certificate": device_pem}}},
            }
        ),
        kind="individual",
        existing=None,
        new_key=_keys(),
    )
    full = schemas.dump(converters.attestation_to_wire(attestation, full=True))
    primary = full["x509"]["clientCertificates"]["primary"]
    assert primary["certificate"] == device_pem
    assert set(primary["info"]) == {
        "subjectName",
        "sha1Thumbprint",
        "sha256Thumbprint",
        "issuerName",
        "notBeforeUtc",
        "notAfterUtc",
        "serialNumber",
        "version",
    }
    assert primary["info"]["notBeforeUtc"] == "2026-03-01T10:00:00.0000000Z"
    assert primary["info"]["serialNumber"] == "07" and primary["info"]["version"] == 3


def test_tpm_attestation_is_returned_with_its_public_keys() -> None:
    attestation = records.Attestation(AttestationType.TPM, tpm=records.TpmAttestation(EK))
    assert schemas.dump(converters.attestation_to_wire(attestation, full=False)) == {
        "type": "tpm",
        "tpm": {"endorsementKey": EK},
    }


# -- enrollments ------------------------------------------------------------------------------------

FULL_INDIVIDUAL = {
    "registrationId": "Sensor-001",
    "deviceId": "sensor-device",
    "attestation": {
        "type": "symmetricKey",
        "symmetricKey": {"primaryKey": KEY_A, "secondaryKey": KEY_B},
    },
    "capabilities": {"iotEdge": True},
    "iotHubHostName": "hub-a.example.net",
    "initialTwin": {
        "tags": {"floor": 3, "gone": None},
        "properties": {"desired": {"interval": 30, "$metadata": {"x": 1}, "$version": 4}},
    },
    "etag": '"ignored"',
    "provisioningStatus": "disabled",
    "reprovisionPolicy": {"updateHubAssignment": True, "migrateDeviceData": False},
    "createdDateTimeUtc": "2000-01-01T00:00:00Z",
    "allocationPolicy": "custom",
    "iotHubs": ["hub-a.example.net", "hub-b.example.net"],
    "customAllocationDefinition": {
        "webhookUrl": "https://alloc.example.net/api?code=k",
        "apiVersion": "2021-10-01",
    },
    "optionalDeviceInformation": {"model": "x1"},
}


def _individual_record(wire: schemas.IndividualEnrollment) -> records.IndividualEnrollment:
    attestation = converters.attestation_from_wire(
        wire.attestation, kind="individual", existing=None, new_key=_keys()
    )
    return records.IndividualEnrollment(
        instance_id="i1",
        registration_id=wire.registration_id,
        spec=converters.spec_from_wire(wire, attestation),
        device_id=wire.device_id,
        optional_device_information=wire.optional_device_information,
        etag='"e1"',
        created_at=CREATED,
        updated_at=UPDATED,
    )


def test_an_individual_enrollment_round_trips_through_its_record() -> None:
    wire = schemas.parse_body(schemas.IndividualEnrollment, json.dumps(FULL_INDIVIDUAL).encode())
    record = _individual_record(wire)
    assert record.spec.provisioning_status is ProvisioningStatus.DISABLED
    assert record.spec.allocation_policy is AllocationPolicy.CUSTOM
    assert record.spec.reprovision_policy == records.ReprovisionPolicy(True, False)
    assert record.spec.iot_edge is True
    out = schemas.dump(converters.individual_enrollment_to_wire(record, full=True))
    expected = {k: v for k, v in FULL_INDIVIDUAL.items() if k not in ("etag", "createdDateTimeUtc")}
    assert {k: out[k] for k in expected} == expected
    assert out["etag"] == '"e1"'
    assert out["createdDateTimeUtc"] == "2026-03-01T10:00:00.1234560Z"
    assert out["lastUpdatedDateTimeUtc"] == "2026-03-02T11:30:00.0000000Z"
    assert "registrationState" not in out


def test_defaults_are_enabled_with_both_reprovision_flags_and_no_edge() -> None:
    wire = schemas.parse_body(
        schemas.IndividualEnrollment,
        b'{"registrationId": "d1", "attestation": {"type": "symmetricKey"}}',
    )
    out = schemas.dump(
        converters.individual_enrollment_to_wire(_individual_record(wire), full=False)
    )
    assert out["provisioningStatus"] == "enabled"
    assert out["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": True}
    assert out["capabilities"] == {"iotEdge": False}
    for absent in (
        "iotHubs",
        "allocationPolicy",
        "initialTwin",
        "deviceId",
        "customAllocationDefinition",
    ):
        assert absent not in out


def test_a_group_round_trips_without_individual_only_fields() -> None:
    body = {
        "enrollmentGroupId": "grp-1",
        "attestation": {
            "type": "symmetricKey",
            "symmetricKey": {"primaryKey": KEY_A, "secondaryKey": KEY_B},
        },
        "initialTwin": {"properties": {"desired": {"a": 1}}},
    }
    wire = schemas.parse_body(schemas.EnrollmentGroup, json.dumps(body).encode())
    attestation = converters.attestation_from_wire(
        wire.attestation, kind="group", existing=None, new_key=_keys()
    )
    record = records.EnrollmentGroup(
        "i1", "grp-1", converters.spec_from_wire(wire, attestation), '"g"', CREATED, UPDATED
    )
    out = schemas.dump(converters.enrollment_group_to_wire(record, full=False))
    assert out["enrollmentGroupId"] == "grp-1"
    assert out["initialTwin"] == {"properties": {"desired": {"a": 1}}}
    assert out["attestation"] == {"type": "symmetricKey", "symmetricKey": {}}
    assert "registrationId" not in out and "deviceId" not in out


def test_registration_states_are_written_with_azure_names() -> None:
    state = RegistrationState(
        instance_id="i1",
        registration_id="Dev-1",
        attestation_type=AttestationType.SYMMETRIC_KEY,
        status=RegistrationStatus.ASSIGNED,
        enrollment_group_id="grp",
        substatus=Substatus.INITIAL_ASSIGNMENT,
        assigned_hub="hub-a.example.net",
        device_id="Dev-1",
        payload={"k": [1, None]},
        etag='"r1"',
        created_at=CREATED,
        updated_at=UPDATED,
    )
    assert schemas.dump(converters.registration_state_to_wire(state)) == {
        "registrationId": "Dev-1",
        "createdDateTimeUtc": "2026-03-01T10:00:00.1234560Z",
        "assignedHub": "hub-a.example.net",
        "deviceId": "Dev-1",
        "status": "assigned",
        "substatus": "initialAssignment",
        "lastUpdatedDateTimeUtc": "2026-03-02T11:30:00.0000000Z",
        "etag": '"r1"',
        "payload": {"k": [1, None]},
    }


def test_an_individual_enrollment_carries_its_registration_state() -> None:
    wire = schemas.parse_body(
        schemas.IndividualEnrollment,
        b'{"registrationId": "d1", "attestation": {"type": "symmetricKey"}}',
    )
    state = RegistrationState(
        "i1",
        "d1",
        AttestationType.SYMMETRIC_KEY,
        RegistrationStatus.FAILED,
        error_code=400208,
        error_message="no hub",
    )
    out = schemas.dump(
        converters.individual_enrollment_to_wire(
            _individual_record(wire), full=False, registration_state=state
        )
    )
    assert out["registrationState"] == {
        "registrationId": "d1",
        "status": "failed",
        "errorCode": 400208,
        "errorMessage": "no hub",
    }
