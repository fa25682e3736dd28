"""Conversion between model records and table rows (the only place that knows both shapes).

Rows are plain dicts keyed by column name (`*_to_row`); records are rebuilt from result rows
(`row_to_*`). Two rules hold for every table:
- Nested parts are JSON documents `{"v": FORMAT_VERSION, ...}` with snake_case keys. The
  marker lets a later release change a document's shape and still read old rows; a document
  with an unknown marker is refused, never guessed at. Values opaque to OpenDPS (twins, device
  payloads, connector settings) are wrapped as `{"v": 1, "value": <as sent>}` and come back
  exactly as sent.
- Timestamps are written as timezone-aware UTC and read back as timezone-aware UTC (SQLite
  returns naive datetimes holding UTC; PostgreSQL returns aware ones).

It is longer than our usual module because it holds one encoder/decoder pair for each of the
eleven record types; each pair is plain field mapping, kept side by side so they change together.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from opendps.model.audit import AuditEntry, MeterCount, MeterKind
from opendps.model.certificate import CaCertificate
from opendps.model.device import DeviceAuthKind, HubDevice
from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    CustomAllocationDefinition,
    EnrollmentGroup,
    EnrollmentSpec,
    IndividualEnrollment,
    ProvisioningStatus,
    ReprovisionPolicy,
    SymmetricKeyAttestation,
    TpmAttestation,
    X509Attestation,
    X509CaReferences,
    X509Certificate,
    X509CertificateInfo,
    X509CertificatePair,
)
from opendps.model.hub import AllocationPolicy, HubKind, LinkedHub
from opendps.model.ids import registration_key
from opendps.model.instance import AccessPolicy, Instance, format_rights, parse_rights
from opendps.model.registration import (
    Operation,
    RegistrationState,
    RegistrationStatus,
    Substatus,
)
from opendps.model.tpm import TpmChallenge

# The shape version written into every JSON document; see docs/database.md before raising it.
FORMAT_VERSION = 1

Row = sa.Row[Any]
Doc = dict[str, Any]


# -- primitives ------------------------------------------------------------------------------
def to_utc(moment: datetime) -> datetime:
    """The UTC form of an aware datetime; a naive one is a programming error (whose zone?)."""
    if moment.tzinfo is None:
        raise ValueError("store records need timezone-aware datetimes (UTC)")
    return moment.astimezone(UTC)


def to_utc_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else to_utc(moment)


def from_db_time(moment: datetime | None) -> datetime | None:
    """Attach UTC to what SQLite returns naive; normalise what PostgreSQL returns aware."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _required_time(moment: datetime | None) -> datetime:
    value = from_db_time(moment)
    if value is None:
        raise ValueError("a required timestamp column is NULL")
    return value


def doc(**fields: Any) -> Doc:
    return {"v": FORMAT_VERSION, **fields}


def open_doc(value: Any, column: str) -> Mapping[str, Any]:
    """The fields of a stored document, after checking its format marker."""
    if not isinstance(value, dict) or value.get("v") != FORMAT_VERSION:
        marker = value.get("v") if isinstance(value, dict) else type(value).__name__
        raise ValueError(f"column {column!r} holds a document of unknown format {marker!r}")
    return value


def _wrap(value: Any) -> Doc | None:
    return None if value is None else doc(value=value)


def _unwrap(value: Any, column: str) -> Any:
    return None if value is None else open_doc(value, column)["value"]


def _hosts_doc(hosts: tuple[str, ...]) -> Doc | None:
    # An empty tuple and NULL mean the same ("no list"), so NULL saves a document per row.
    return doc(hosts=list(hosts)) if hosts else None


def _hosts(value: Any, column: str) -> tuple[str, ...]:
    return () if value is None else tuple(open_doc(value, column)["hosts"])


# -- nested parts ----------------------------------------------------------------------------
def _custom_allocation_doc(custom: CustomAllocationDefinition | None) -> Doc | None:
    if custom is None:
        return None
    return doc(webhook_url=custom.webhook_url, api_version=custom.api_version)


def _custom_allocation(
    value: Any, column: str = "custom_allocation"
) -> CustomAllocationDefinition | None:
    if value is None:
        return None
    fields = open_doc(value, column)
    return CustomAllocationDefinition(
        webhook_url=fields["webhook_url"], api_version=fields["api_version"]
    )


def _certificate_part(cert: X509Certificate | None) -> Doc | None:
    if cert is None:
        return None
    info = cert.info
    return {
        "certificate_pem": cert.certificate_pem,
        "info": {
            "subject_name": info.subject_name,
            "sha1_thumbprint": info.sha1_thumbprint,
            "sha256_thumbprint": info.sha256_thumbprint,
            "issuer_name": info.issuer_name,
            "not_before_utc": to_utc(info.not_before_utc).isoformat(),
            "not_after_utc": to_utc(info.not_after_utc).isoformat(),
            "serial_number": info.serial_number,
            "version": info.version,
        },
    }


def _certificate(part: Mapping[str, Any] | None) -> X509Certificate | None:
    if part is None:
        return None
    info = part["info"]
    return X509Certificate(
        certificate_pem=part["certificate_pem"],
        info=X509CertificateInfo(
            subject_name=info["subject_name"],
            sha1_thumbprint=info["sha1_thumbprint"],
            sha256_thumbprint=info["sha256_thumbprint"],
            issuer_name=info["issuer_name"],
            not_before_utc=datetime.fromisoformat(info["not_before_utc"]),
            not_after_utc=datetime.fromisoformat(info["not_after_utc"]),
            serial_number=info["serial_number"],
            version=info["version"],
        ),
    )


def _pair_part(pair: X509CertificatePair | None) -> Doc | None:
    if pair is None:
        return None
    return {
        "primary": _certificate_part(pair.primary),
        "secondary": _certificate_part(pair.secondary),
    }


def _pair(part: Mapping[str, Any] | None) -> X509CertificatePair | None:
    if part is None:
        return None
    return X509CertificatePair(
        primary=_certificate(part["primary"]), secondary=_certificate(part["secondary"])
    )


def _x509_part(x509: X509Attestation) -> Doc:
    refs = x509.ca_references
    return {
        "client_certificates": _pair_part(x509.client_certificates),
        "signing_certificates": _pair_part(x509.signing_certificates),
        "ca_references": None
        if refs is None
        else {"primary": refs.primary, "secondary": refs.secondary},
    }


def _x509(part: Mapping[str, Any]) -> X509Attestation:
    refs = part["ca_references"]
    return X509Attestation(
        client_certificates=_pair(part["client_certificates"]),
        signing_certificates=_pair(part["signing_certificates"]),
        ca_references=None
        if refs is None
        else X509CaReferences(refs["primary"], refs["secondary"]),
    )


def attestation_doc(attestation: Attestation) -> Doc:
    fields: Doc = {"type": attestation.type.value}
    if attestation.symmetric_key is not None:
        key = attestation.symmetric_key
        fields["symmetric_key"] = {
            "primary_key": key.primary_key,
            "secondary_key": key.secondary_key,
        }
    if attestation.tpm is not None:
        tpm = attestation.tpm
        fields["tpm"] = {
            "endorsement_key": tpm.endorsement_key,
            "storage_root_key": tpm.storage_root_key,
        }
    if attestation.x509 is not None:
        fields["x509"] = _x509_part(attestation.x509)
    return doc(**fields)


def attestation_from_doc(value: Any) -> Attestation:
    fields = open_doc(value, "attestation")
    key = fields.get("symmetric_key")
    tpm = fields.get("tpm")
    x509 = fields.get("x509")
    return Attestation(
        type=AttestationType(fields["type"]),
        symmetric_key=None
        if key is None
        else SymmetricKeyAttestation(key["primary_key"], key["secondary_key"]),
        tpm=None
        if tpm is None
        else TpmAttestation(tpm["endorsement_key"], tpm["storage_root_key"]),
        x509=None if x509 is None else _x509(x509),
    )


def _spec_columns(spec: EnrollmentSpec) -> Doc:
    reprovision = spec.reprovision_policy
    return {
        "attestation_type": spec.attestation.type.value,
        "attestation": attestation_doc(spec.attestation),
        "provisioning_status": spec.provisioning_status.value,
        "iot_hubs": _hosts_doc(spec.iot_hubs),
        "iot_hub_host_name": spec.iot_hub_host_name,
        "allocation_policy": None
        if spec.allocation_policy is None
        else spec.allocation_policy.value,
        "custom_allocation": _custom_allocation_doc(spec.custom_allocation),
        "reprovision_policy": doc(
            update_hub_assignment=reprovision.update_hub_assignment,
            migrate_device_data=reprovision.migrate_device_data,
        ),
        "initial_twin": None if spec.initial_twin is None else doc(twin=spec.initial_twin),
        "iot_edge": spec.iot_edge,
    }


def _spec(row: Row) -> EnrollmentSpec:
    reprovision = open_doc(row.reprovision_policy, "reprovision_policy")
    twin = row.initial_twin
    return EnrollmentSpec(
        attestation=attestation_from_doc(row.attestation),
        provisioning_status=ProvisioningStatus(row.provisioning_status),
        iot_hubs=_hosts(row.iot_hubs, "iot_hubs"),
        iot_hub_host_name=row.iot_hub_host_name,
        allocation_policy=None
        if row.allocation_policy is None
        else AllocationPolicy(row.allocation_policy),
        custom_allocation=_custom_allocation(row.custom_allocation),
        reprovision_policy=ReprovisionPolicy(
            update_hub_assignment=reprovision["update_hub_assignment"],
            migrate_device_data=reprovision["migrate_device_data"],
        ),
        initial_twin=None if twin is None else open_doc(twin, "initial_twin")["twin"],
        iot_edge=row.iot_edge,
    )


def _times(etag: str, created_at: datetime | None, updated_at: datetime | None) -> Doc:
    """etag and timestamps; a record written without `created_at` is created at `updated_at`."""
    return {
        "etag": etag,
        "created_at": to_utc_or_none(created_at if created_at is not None else updated_at),
        "updated_at": to_utc_or_none(updated_at),
    }


# -- instances and policies ------------------------------------------------------------------
def instance_to_row(instance: Instance) -> Doc:
    return {
        "id": instance.id,
        "name": instance.name,
        "name_key": registration_key(instance.name),
        "id_scope": instance.id_scope,
        "service_host_name": instance.service_host_name,
        "service_host_key": registration_key(instance.service_host_name),
        "allocation_policy": instance.allocation_policy.value,
        "custom_allocation": _custom_allocation_doc(instance.custom_allocation),
        "etag": instance.etag,
        "created_at": to_utc(instance.created_at),
        "updated_at": to_utc(instance.updated_at),
    }


def row_to_instance(row: Row) -> Instance:
    return Instance(
        id=row.id,
        name=row.name,
        id_scope=row.id_scope,
        service_host_name=row.service_host_name,
        allocation_policy=AllocationPolicy(row.allocation_policy),
        custom_allocation=_custom_allocation(row.custom_allocation),
        etag=row.etag,
        created_at=_required_time(row.created_at),
        updated_at=_required_time(row.updated_at),
    )


def access_policy_to_row(policy: AccessPolicy) -> Doc:
    return {
        "instance_id": policy.instance_id,
        "name_key": registration_key(policy.name),
        "name": policy.name,
        "primary_key": policy.primary_key,
        "secondary_key": policy.secondary_key,
        "rights": ",".join(format_rights(policy.rights)),
    }


def row_to_access_policy(row: Row) -> AccessPolicy:
    return AccessPolicy(
        instance_id=row.instance_id,
        name=row.name,
        primary_key=row.primary_key,
        secondary_key=row.secondary_key,
        rights=parse_rights(row.rights),
    )


def linked_hub_to_row(hub: LinkedHub) -> Doc:
    return {
        "instance_id": hub.instance_id,
        "host_key": registration_key(hub.host_name),
        "host_name": hub.host_name,
        "kind": hub.kind.value,
        "allocation_weight": hub.allocation_weight,
        "apply_allocation_policy": hub.apply_allocation_policy,
        "location": hub.location,
        "connection": doc(value=hub.connection),
        **_times(hub.etag, hub.created_at, hub.updated_at),
    }


def row_to_linked_hub(row: Row) -> LinkedHub:
    return LinkedHub(
        instance_id=row.instance_id,
        host_name=row.host_name,
        kind=HubKind(row.kind),
        allocation_weight=row.allocation_weight,
        apply_allocation_policy=row.apply_allocation_policy,
        location=row.location,
        connection=_unwrap(row.connection, "connection"),
        etag=row.etag,
        created_at=from_db_time(row.created_at),
        updated_at=from_db_time(row.updated_at),
    )


# -- enrollments -----------------------------------------------------------------------------
def individual_enrollment_to_row(enrollment: IndividualEnrollment) -> Doc:
    return {
        "instance_id": enrollment.instance_id,
        "registration_key": registration_key(enrollment.registration_id),
        "registration_id": enrollment.registration_id,
        "device_id": enrollment.device_id,
        **_spec_columns(enrollment.spec),
        "optional_device_information": _wrap(enrollment.optional_device_information),
        **_times(enrollment.etag, enrollment.created_at, enrollment.updated_at),
    }


def row_to_individual_enrollment(row: Row) -> IndividualEnrollment:
    return IndividualEnrollment(
        instance_id=row.instance_id,
        registration_id=row.registration_id,
        spec=_spec(row),
        device_id=row.device_id,
        optional_device_information=_unwrap(
            row.optional_device_information, "optional_device_information"
        ),
        etag=row.etag,
        created_at=from_db_time(row.created_at),
        updated_at=from_db_time(row.updated_at),
    )


def enrollment_group_to_row(group: EnrollmentGroup) -> Doc:
    return {
        "instance_id": group.instance_id,
        "group_key": registration_key(group.enrollment_group_id),
        "enrollment_group_id": group.enrollment_group_id,
        **_spec_columns(group.spec),
        **_times(group.etag, group.created_at, group.updated_at),
    }


def row_to_enrollment_group(row: Row) -> EnrollmentGroup:
    return EnrollmentGroup(
        instance_id=row.instance_id,
        enrollment_group_id=row.enrollment_group_id,
        spec=_spec(row),
        etag=row.etag,
        created_at=from_db_time(row.created_at),
        updated_at=from_db_time(row.updated_at),
    )


# -- registrations and operations ------------------------------------------------------------
def registration_state_to_row(state: RegistrationState) -> Doc:
    group = state.enrollment_group_id
    return {
        "instance_id": state.instance_id,
        "registration_key": registration_key(state.registration_id),
        "registration_id": state.registration_id,
        "attestation_type": state.attestation_type.value,
        "status": state.status.value,
        "substatus": None if state.substatus is None else state.substatus.value,
        "enrollment_group_id": group,
        "enrollment_group_key": None if group is None else registration_key(group),
        "assigned_hub": state.assigned_hub,
        "device_id": state.device_id,
        "error_code": state.error_code,
        "error_message": state.error_message,
        "payload": _wrap(state.payload),
        "previous_hubs": _hosts_doc(state.previous_hubs),
        **_times(state.etag, state.created_at, state.updated_at),
    }


def row_to_registration_state(row: Row) -> RegistrationState:
    return RegistrationState(
        instance_id=row.instance_id,
        registration_id=row.registration_id,
        attestation_type=AttestationType(row.attestation_type),
        status=RegistrationStatus(row.status),
        enrollment_group_id=row.enrollment_group_id,
        substatus=None if row.substatus is None else Substatus(row.substatus),
        assigned_hub=row.assigned_hub,
        device_id=row.device_id,
        error_code=row.error_code,
        error_message=row.error_message,
        payload=_unwrap(row.payload, "payload"),
        previous_hubs=_hosts(row.previous_hubs, "previous_hubs"),
        etag=row.etag,
        created_at=from_db_time(row.created_at),
        updated_at=from_db_time(row.updated_at),
    )


def operation_to_row(operation: Operation) -> Doc:
    return {
        "instance_id": operation.instance_id,
        "operation_id": operation.operation_id,
        "registration_id": operation.registration_id,
        "status": operation.status.value,
        "error_code": operation.error_code,
        "error_message": operation.error_message,
        "created_at": to_utc(operation.created_at),
        "updated_at": to_utc(operation.updated_at),
    }


def row_to_operation(row: Row) -> Operation:
    return Operation(
        operation_id=row.operation_id,
        instance_id=row.instance_id,
        registration_id=row.registration_id,
        status=RegistrationStatus(row.status),
        created_at=_required_time(row.created_at),
        updated_at=_required_time(row.updated_at),
        error_code=row.error_code,
        error_message=row.error_message,
    )


def tpm_challenge_to_row(challenge: TpmChallenge) -> Doc:
    return {
        "instance_id": challenge.instance_id,
        "registration_key": registration_key(challenge.registration_id),
        "registration_id": challenge.registration_id,
        "challenge_id": challenge.challenge_id,
        "endorsement_key": _b64(challenge.endorsement_key),
        "storage_root_key": _b64(challenge.storage_root_key),
        "challenge_key": _b64(challenge.key),
        "hub_key": _b64(challenge.hub_key) if challenge.hub_key is not None else None,
        "created_at": to_utc(challenge.created_at),
        "expires_at": to_utc(challenge.expires_at),
        "used_at": to_utc_or_none(challenge.used_at),
    }


def row_to_tpm_challenge(row: Row) -> TpmChallenge:
    return TpmChallenge(
        instance_id=row.instance_id,
        registration_id=row.registration_id,
        challenge_id=row.challenge_id,
        endorsement_key=base64.b64decode(row.endorsement_key),
        storage_root_key=base64.b64decode(row.storage_root_key),
        key=base64.b64decode(row.challenge_key),
        hub_key=base64.b64decode(row.hub_key) if row.hub_key is not None else None,
        created_at=_required_time(row.created_at),
        expires_at=_required_time(row.expires_at),
        used_at=from_db_time(row.used_at),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- certificates and hub devices ------------------------------------------------------------
def ca_certificate_to_row(cert: CaCertificate) -> Doc:
    return {
        "instance_id": cert.instance_id,
        "name_key": registration_key(cert.name),
        "name": cert.name,
        "certificate_pem": cert.certificate_pem,
        "subject": cert.subject,
        "sha1_thumbprint": cert.sha1_thumbprint,
        "sha256_thumbprint": cert.sha256_thumbprint,
        "not_before_utc": to_utc(cert.not_before_utc),
        "not_after_utc": to_utc(cert.not_after_utc),
        "is_verified": cert.is_verified,
        "verification_code": cert.verification_code,
        **_times(cert.etag, cert.created_at, cert.updated_at),
    }


def row_to_ca_certificate(row: Row) -> CaCertificate:
    return CaCertificate(
        instance_id=row.instance_id,
        name=row.name,
        certificate_pem=row.certificate_pem,
        subject=row.subject,
        sha1_thumbprint=row.sha1_thumbprint,
        sha256_thumbprint=row.sha256_thumbprint,
        not_before_utc=_required_time(row.not_before_utc),
        not_after_utc=_required_time(row.not_after_utc),
        is_verified=row.is_verified,
        verification_code=row.verification_code,
        etag=row.etag,
        created_at=from_db_time(row.created_at),
        updated_at=from_db_time(row.updated_at),
    )


def hub_device_to_row(device: HubDevice) -> Doc:
    return {
        "hub_key": registration_key(device.hub_host_name),
        "device_key": registration_key(device.device_id),
        "hub_host_name": device.hub_host_name,
        "device_id": device.device_id,
        "instance_id": device.instance_id,
        "auth_kind": device.auth_kind.value,
        "auth": doc(value=device.auth),
        "iot_edge": device.iot_edge,
        "status": device.status,
        "twin": doc(tags=device.tags, desired=device.desired, reported=device.reported),
        "desired_version": device.desired_version,
        "reported_version": device.reported_version,
        **_times(device.etag, device.created_at, device.updated_at),
    }


def row_to_hub_device(row: Row) -> HubDevice:
    twin = open_doc(row.twin, "twin")
    return HubDevice(
        hub_host_name=row.hub_host_name,
        device_id=row.device_id,
        instance_id=row.instance_id,
        auth_kind=DeviceAuthKind(row.auth_kind),
        auth=_unwrap(row.auth, "auth"),
        iot_edge=row.iot_edge,
        status=row.status,
        tags=twin["tags"],
        desired=twin["desired"],
        reported=twin["reported"],
        desired_version=row.desired_version,
        reported_version=row.reported_version,
        etag=row.etag,
        created_at=from_db_time(row.created_at),
        updated_at=from_db_time(row.updated_at),
    )


# -- audit and metering ----------------------------------------------------------------------
def audit_to_row(entry: AuditEntry) -> Doc:
    # The id is the database's to assign: it orders the log.
    return {
        "at": to_utc(entry.at),
        "instance_id": entry.instance_id,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
    }


def row_to_audit(row: Row) -> AuditEntry:
    return AuditEntry(
        at=_required_time(row.at),
        instance_id=row.instance_id,
        actor=row.actor,
        action=row.action,
        target=row.target,
        id=row.id,
    )


def row_to_meter(row: Row) -> MeterCount:
    # `count` is also a tuple method on Row, hence the mapping access.
    fields = row._mapping
    return MeterCount(
        instance_id=fields["instance_id"],
        day=fields["day"],
        kind=MeterKind(fields["kind"]),
        count=fields["count"],
    )
