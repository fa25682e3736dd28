"""Converters between the service API's wire models (schemas.py) and the model records.

Wire -> record applies the attestation rules a JSON schema cannot express (protocol.md §5-§7.2):
which attestation types each enrollment kind may use, exactly one X.509 shape, key sizes,
generated symmetric keys, and keeping the keys and certificates a client left out of an update
(GET answers omit them, so an object read and written back must not lose them).
Record -> wire decides what an answer shows: `full=True` (PUT answers, the attestation
mechanism call) includes symmetric keys and certificate text, `full=False` (GET, query) does not.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from opendps.attestation.tpm import parse_tpm_public_base64
from opendps.attestation.x509 import parse_certificate
from opendps.model import enrollment as records
from opendps.model import registration as registration_records
from opendps.model.enrollment import AttestationType, ProvisioningStatus
from opendps.model.errors import INVALID_BODY, DpsError, format_utc
from opendps.model.json import JsonObject
from opendps.service_api.schemas import (
    AttestationMechanism,
    CustomAllocationDefinition,
    DeviceCapabilities,
    DeviceRegistrationState,
    EnrollmentGroup,
    IndividualEnrollment,
    InitialTwin,
    InitialTwinProperties,
    ReprovisionPolicy,
    SymmetricKeyAttestation,
    TpmAttestation,
    X509Attestation,
    X509CAReferences,
    X509CertificateInfo,
    X509Certificates,
    X509CertificateWithInfo,
)

# Azure accepts symmetric keys of 16 to 64 bytes (the portal's rule; generated keys are 64).
MIN_SYMMETRIC_KEY_BYTES = 16
MAX_SYMMETRIC_KEY_BYTES = 64
# A TPM 2.0 EK or SRK TPM2B_PUBLIC is about 300 bytes for RSA-2048 (protocol.md §6.4); 4 KiB
# leaves room for any key size a TPM supports while bounding what we store per enrollment.
MAX_TPM_KEY_BYTES = 4096

EnrollmentKind = Literal["individual", "group"]


# -- attestation: wire -> record ------------------------------------------------------------------

_ALLOWED_TYPES: dict[EnrollmentKind, tuple[AttestationType, ...]] = {
    # TPM attestation is individual-enrollment only (protocol.md §6); `none` cannot attest.
    "individual": (AttestationType.SYMMETRIC_KEY, AttestationType.X509, AttestationType.TPM),
    "group": (AttestationType.SYMMETRIC_KEY, AttestationType.X509),
}


def attestation_from_wire(
    wire: AttestationMechanism,
    *,
    kind: EnrollmentKind,
    existing: records.Attestation | None,
    new_key: Callable[[], str],
) -> records.Attestation:
    """The stored attestation for a create or update.

    Only the section named by `type` is read. On an update, symmetric keys and certificates the
    client left out (GET answers omit them) are kept from `existing`; keys still missing are
    generated with `new_key`. Raises DpsError(INVALID_BODY / INVALID_CERTIFICATE_FORMAT).
    """
    if wire.type not in _ALLOWED_TYPES[kind]:
        allowed = ", ".join(str(t) for t in _ALLOWED_TYPES[kind])
        what = "individual enrollments" if kind == "individual" else "enrollment groups"
        raise _invalid(
            f"attestation.type {str(wire.type)!r} is not allowed for {what}; use {allowed}"
        )
    previous = existing if existing is not None and existing.type == wire.type else None
    if wire.type is AttestationType.SYMMETRIC_KEY:
        kept = previous.symmetric_key if previous else None
        return records.Attestation(
            wire.type, symmetric_key=_symmetric(wire.symmetric_key, kept, new_key)
        )
    if wire.type is AttestationType.TPM:
        if wire.tpm is None:
            raise _invalid("attestation.tpm with an endorsementKey is required for TPM attestation")
        return records.Attestation(wire.type, tpm=_tpm(wire.tpm))
    if wire.x509 is None:
        raise _invalid("attestation.x509 is required for X.509 attestation")
    kept_x509 = previous.x509 if previous else None
    return records.Attestation(wire.type, x509=_x509(wire.x509, kind, kept_x509))


def _symmetric(
    wire: SymmetricKeyAttestation | None,
    kept: records.SymmetricKeyAttestation | None,
    new_key: Callable[[], str],
) -> records.SymmetricKeyAttestation:
    primary = wire.primary_key if wire else None
    secondary = wire.secondary_key if wire else None
    return records.SymmetricKeyAttestation(
        primary_key=_key_or(primary, kept.primary_key if kept else None, new_key, "primaryKey"),
        secondary_key=_key_or(
            secondary, kept.secondary_key if kept else None, new_key, "secondaryKey"
        ),
    )


def _key_or(given: str | None, kept: str | None, new_key: Callable[[], str], name: str) -> str:
    if given is None or given == "":
        return kept if kept is not None else new_key()
    decoded = _base64(given, f"attestation.symmetricKey.{name}")
    if not MIN_SYMMETRIC_KEY_BYTES <= len(decoded) <= MAX_SYMMETRIC_KEY_BYTES:
        raise _invalid(
            f"attestation.symmetricKey.{name} must be {MIN_SYMMETRIC_KEY_BYTES} to "
            f"{MAX_SYMMETRIC_KEY_BYTES} bytes, base64-encoded"
        )
    return given


def _tpm(wire: TpmAttestation) -> records.TpmAttestation:
    for name, value in (
        ("endorsementKey", wire.endorsement_key),
        ("storageRootKey", wire.storage_root_key),
    ):
        if value is not None and len(_base64(value, f"attestation.tpm.{name}")) > MAX_TPM_KEY_BYTES:
            raise _invalid(f"attestation.tpm.{name} is longer than {MAX_TPM_KEY_BYTES} bytes")
    if not wire.endorsement_key:
        raise _invalid("attestation.tpm.endorsementKey is required for TPM attestation")
    # Refuse keys no device could ever attest with now, not at the device's first boot.
    parse_tpm_public_base64(wire.endorsement_key, "attestation.tpm.endorsementKey")
    if wire.storage_root_key:
        parse_tpm_public_base64(wire.storage_root_key, "attestation.tpm.storageRootKey")
    return records.TpmAttestation(wire.endorsement_key, wire.storage_root_key or None)


def _base64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{where} is not valid base64") from None


def _x509(
    wire: X509Attestation, kind: EnrollmentKind, kept: records.X509Attestation | None
) -> records.X509Attestation:
    given = {
        "clientCertificates": wire.client_certificates,
        "signingCertificates": wire.signing_certificates,
        "caReferences": wire.ca_references,
    }
    present = [name for name, value in given.items() if value is not None]
    allowed = (
        ["clientCertificates"] if kind == "individual" else ["signingCertificates", "caReferences"]
    )
    if len(present) != 1 or present[0] not in allowed:
        what = "an individual enrollment" if kind == "individual" else "an enrollment group"
        raise _invalid(f"attestation.x509 of {what} needs exactly one of {' or '.join(allowed)}")
    if wire.ca_references is not None:
        if not wire.ca_references.primary:
            raise _invalid("attestation.x509.caReferences.primary is required")
        return records.X509Attestation(
            ca_references=records.X509CaReferences(
                wire.ca_references.primary, wire.ca_references.secondary or None
            )
        )
    if wire.client_certificates is not None:
        old = kept.client_certificates if kept else None
        return records.X509Attestation(
            client_certificates=_pair(wire.client_certificates, old, "clientCertificates")
        )
    assert wire.signing_certificates is not None  # one of three, checked above
    old = kept.signing_certificates if kept else None
    return records.X509Attestation(
        signing_certificates=_pair(wire.signing_certificates, old, "signingCertificates")
    )


def _pair(
    wire: X509Certificates, kept: records.X509CertificatePair | None, name: str
) -> records.X509CertificatePair:
    if wire.primary is None:
        raise _invalid(f"attestation.x509.{name}.primary is required")
    primary = _certificate(wire.primary, kept.primary if kept else None, f"{name}.primary")
    secondary = None
    if wire.secondary is not None:
        secondary = _certificate(
            wire.secondary, kept.secondary if kept else None, f"{name}.secondary"
        )
    return records.X509CertificatePair(primary, secondary)


def _certificate(
    wire: X509CertificateWithInfo, kept: records.X509Certificate | None, where: str
) -> records.X509Certificate:
    if wire.certificate:
        try:
            return parse_certificate(wire.certificate)
        except DpsError as err:
            raise DpsError(
                err.error_code, f"attestation.x509.{where}.certificate: {err.message}"
            ) from None
    if kept is not None:
        # GET answers carry only `info`; an object written back unchanged keeps its certificate.
        return kept
    raise _invalid(f"attestation.x509.{where}.certificate is required")


def _invalid(message: str) -> DpsError:
    return DpsError(INVALID_BODY, message[0].upper() + message[1:] + ".")


# -- attestation: record -> wire --------------------------------------------------------------------


def attestation_to_wire(attestation: records.Attestation, *, full: bool) -> AttestationMechanism:
    """`full` includes symmetric keys and certificate text (PUT answers and the
    attestationmechanism call); GET and query answers leave them out (protocol.md §7.2)."""
    keys = attestation.symmetric_key
    symmetric = None
    if keys is not None:
        symmetric = (
            SymmetricKeyAttestation(primary_key=keys.primary_key, secondary_key=keys.secondary_key)
            if full
            else SymmetricKeyAttestation()
        )
    tpm = None
    if attestation.tpm is not None:
        tpm = TpmAttestation(
            endorsement_key=attestation.tpm.endorsement_key,
            storage_root_key=attestation.tpm.storage_root_key,
        )
    return AttestationMechanism(
        type=attestation.type,
        tpm=tpm,
        x509=_x509_to_wire(attestation.x509, full=full) if attestation.x509 is not None else None,
        symmetric_key=symmetric,
    )


def _x509_to_wire(x509: records.X509Attestation, *, full: bool) -> X509Attestation:
    references = None
    if x509.ca_references is not None:
        references = X509CAReferences(
            primary=x509.ca_references.primary, secondary=x509.ca_references.secondary
        )
    return X509Attestation(
        client_certificates=_pair_to_wire(x509.client_certificates, full=full),
        signing_certificates=_pair_to_wire(x509.signing_certificates, full=full),
        ca_references=references,
    )


def _pair_to_wire(
    pair: records.X509CertificatePair | None, *, full: bool
) -> X509Certificates | None:
    if pair is None:
        return None
    return X509Certificates(
        primary=_certificate_to_wire(pair.primary, full=full),
        secondary=_certificate_to_wire(pair.secondary, full=full),
    )


def _certificate_to_wire(
    certificate: records.X509Certificate | None, *, full: bool
) -> X509CertificateWithInfo | None:
    if certificate is None:
        return None
    return X509CertificateWithInfo(
        certificate=certificate.certificate_pem if full else None,
        info=certificate_info_to_wire(certificate.info),
    )


def certificate_info_to_wire(info: records.X509CertificateInfo) -> X509CertificateInfo:
    return X509CertificateInfo(
        subject_name=info.subject_name,
        sha1_thumbprint=info.sha1_thumbprint,
        sha256_thumbprint=info.sha256_thumbprint,
        issuer_name=info.issuer_name,
        not_before_utc=format_utc(info.not_before_utc),
        not_after_utc=format_utc(info.not_after_utc),
        serial_number=info.serial_number,
        version=info.version,
    )


# -- enrollment settings: wire <-> record --------------------------------------------------------------


def spec_from_wire(
    wire: IndividualEnrollment | EnrollmentGroup, attestation: records.Attestation
) -> records.EnrollmentSpec:
    """The provisioning settings of an enrollment, as sent (hub names are checked by the caller)."""
    reprovision = wire.reprovision_policy or ReprovisionPolicy()
    custom = wire.custom_allocation_definition
    return records.EnrollmentSpec(
        attestation=attestation,
        provisioning_status=wire.provisioning_status or ProvisioningStatus.ENABLED,
        iot_hubs=tuple(wire.iot_hubs or ()),
        iot_hub_host_name=wire.iot_hub_host_name or None,
        allocation_policy=wire.allocation_policy,
        custom_allocation=(
            records.CustomAllocationDefinition(custom.webhook_url, custom.api_version)
            if custom
            else None
        ),
        reprovision_policy=records.ReprovisionPolicy(
            reprovision.update_hub_assignment, reprovision.migrate_device_data
        ),
        initial_twin=_twin_from_wire(wire.initial_twin),
        iot_edge=wire.capabilities.iot_edge if wire.capabilities else False,
    )


def _twin_from_wire(twin: InitialTwin | None) -> JsonObject | None:
    if twin is None:
        return None
    stored: JsonObject = {}
    if twin.tags is not None:
        stored["tags"] = twin.tags
    if twin.properties is not None and twin.properties.desired is not None:
        stored["properties"] = {"desired": twin.properties.desired}
    return stored


def _twin_to_wire(twin: JsonObject | None) -> InitialTwin | None:
    if twin is None:
        return None
    desired = twin.get("properties", {}).get("desired")
    return InitialTwin(
        tags=twin.get("tags"),
        properties=InitialTwinProperties(desired=desired) if desired is not None else None,
    )


def _spec_fields(spec: records.EnrollmentSpec, *, full: bool) -> dict[str, Any]:
    custom = spec.custom_allocation
    return {
        "attestation": attestation_to_wire(spec.attestation, full=full),
        "capabilities": DeviceCapabilities(iot_edge=spec.iot_edge),
        "iot_hub_host_name": spec.iot_hub_host_name,
        "initial_twin": _twin_to_wire(spec.initial_twin),
        "provisioning_status": spec.provisioning_status,
        "reprovision_policy": ReprovisionPolicy(
            update_hub_assignment=spec.reprovision_policy.update_hub_assignment,
            migrate_device_data=spec.reprovision_policy.migrate_device_data,
        ),
        "allocation_policy": spec.allocation_policy,
        "iot_hubs": list(spec.iot_hubs) if spec.iot_hubs else None,
        "custom_allocation_definition": (
            CustomAllocationDefinition(
                webhook_url=custom.webhook_url, api_version=custom.api_version
            )
            if custom
            else None
        ),
    }


def _timestamp(moment: datetime | None) -> str | None:
    return format_utc(moment) if moment is not None else None


def individual_enrollment_to_wire(
    enrollment: records.IndividualEnrollment,
    *,
    full: bool,
    registration_state: registration_records.RegistrationState | None = None,
) -> IndividualEnrollment:
    return IndividualEnrollment(
        registration_id=enrollment.registration_id,
        device_id=enrollment.device_id,
        registration_state=(
            registration_state_to_wire(registration_state) if registration_state else None
        ),
        optional_device_information=enrollment.optional_device_information,
        etag=enrollment.etag or None,
        created_date_time_utc=_timestamp(enrollment.created_at),
        last_updated_date_time_utc=_timestamp(enrollment.updated_at),
        **_spec_fields(enrollment.spec, full=full),
    )


def enrollment_group_to_wire(group: records.EnrollmentGroup, *, full: bool) -> EnrollmentGroup:
    return EnrollmentGroup(
        enrollment_group_id=group.enrollment_group_id,
        etag=group.etag or None,
        created_date_time_utc=_timestamp(group.created_at),
        last_updated_date_time_utc=_timestamp(group.updated_at),
        **_spec_fields(group.spec, full=full),
    )


def registration_state_to_wire(
    state: registration_records.RegistrationState,
) -> DeviceRegistrationState:
    return DeviceRegistrationState(
        registration_id=state.registration_id,
        created_date_time_utc=_timestamp(state.created_at),
        assigned_hub=state.assigned_hub,
        device_id=state.device_id,
        status=state.status,
        substatus=state.substatus,
        error_code=state.error_code,
        error_message=state.error_message,
        last_updated_date_time_utc=_timestamp(state.updated_at),
        etag=state.etag or None,
        payload=state.payload,
    )
