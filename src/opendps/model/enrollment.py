"""Individual enrollments, enrollment groups and their attestation mechanisms."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from opendps.model.hub import AllocationPolicy
from opendps.model.json import JsonObject


class AttestationType(enum.StrEnum):
    NONE = "none"
    TPM = "tpm"
    X509 = "x509"
    SYMMETRIC_KEY = "symmetricKey"


class ProvisioningStatus(enum.StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class SymmetricKeyAttestation:
    primary_key: str
    secondary_key: str


@dataclass(frozen=True, slots=True)
class TpmAttestation:
    endorsement_key: str  # base64 TPM2B_PUBLIC
    storage_root_key: str | None = None


@dataclass(frozen=True, slots=True)
class X509CertificateInfo:
    """What Azure returns as `info` for an enrolled certificate (`X509CertificateInfo`)."""

    subject_name: str
    sha1_thumbprint: str
    sha256_thumbprint: str
    issuer_name: str
    not_before_utc: datetime
    not_after_utc: datetime
    serial_number: str
    version: int


@dataclass(frozen=True, slots=True)
class X509Certificate:
    """An enrolled certificate, normalised to PEM, with the info derived from it."""

    certificate_pem: str
    info: X509CertificateInfo


@dataclass(frozen=True, slots=True)
class X509CertificatePair:
    primary: X509Certificate | None = None
    secondary: X509Certificate | None = None


@dataclass(frozen=True, slots=True)
class X509CaReferences:
    """Names of CA certificates uploaded to the instance."""

    primary: str | None = None
    secondary: str | None = None


@dataclass(frozen=True, slots=True)
class X509Attestation:
    """Exactly one of the three is set (validated where the wire shape is parsed)."""

    client_certificates: X509CertificatePair | None = None
    signing_certificates: X509CertificatePair | None = None
    ca_references: X509CaReferences | None = None


@dataclass(frozen=True, slots=True)
class Attestation:
    type: AttestationType
    symmetric_key: SymmetricKeyAttestation | None = None
    x509: X509Attestation | None = None
    tpm: TpmAttestation | None = None


@dataclass(frozen=True, slots=True)
class ReprovisionPolicy:
    """Both default to true, as in Azure (protocol.md §7.2)."""

    update_hub_assignment: bool = True
    migrate_device_data: bool = True


@dataclass(frozen=True, slots=True)
class CustomAllocationDefinition:
    webhook_url: str
    api_version: str


@dataclass(frozen=True, slots=True)
class EnrollmentSpec:
    """What individual enrollments and enrollment groups share: how devices are provisioned."""

    attestation: Attestation
    provisioning_status: ProvisioningStatus = ProvisioningStatus.ENABLED
    # Candidate hubs (host names); empty means "every hub linked to the instance".
    iot_hubs: tuple[str, ...] = ()
    # Legacy single target hub (superseded by iot_hubs), kept because clients still send it.
    iot_hub_host_name: str | None = None
    # None means "use the instance's allocation policy".
    allocation_policy: AllocationPolicy | None = None
    custom_allocation: CustomAllocationDefinition | None = None
    reprovision_policy: ReprovisionPolicy = field(default_factory=ReprovisionPolicy)
    # `{"tags": {...}, "properties": {"desired": {...}}}`, stored and returned as sent.
    initial_twin: JsonObject | None = None
    iot_edge: bool = False


@dataclass(frozen=True, slots=True)
class IndividualEnrollment:
    instance_id: str
    registration_id: str
    spec: EnrollmentSpec
    device_id: str | None = None
    optional_device_information: JsonObject | None = None
    etag: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EnrollmentGroup:
    instance_id: str
    enrollment_group_id: str
    spec: EnrollmentSpec
    etag: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
