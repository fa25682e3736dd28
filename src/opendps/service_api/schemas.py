"""Wire shapes of the DPS service API (data plane 2021-10-01): models, parsing, rendering.

This module is the one schema source (STYLE §3.4 habit 11): request validation, response
serialisation and the OpenAPI document all come from these pydantic models. Classes carry
Azure's schema names (`IndividualEnrollment`, `AttestationMechanism`, ...) so that the generated
document reads like Azure's `service.json`; the records of `opendps.model` are imported under
module names to keep the two apart. camelCase appears here and nowhere else (converters.py
maps these models to and from the records).

Parsing rules (protocol.md §7, clients.md §4): unknown fields are ignored (servers "must ignore
unknown fields"), JSON types are checked strictly (`"true"` is not a boolean, `5` is not a
string), enum values must be known, and read-only fields sent back by clients
(`createdDateTimeUtc`, `registrationState`, `info`, ...) are accepted and ignored.
"""

from __future__ import annotations

import enum
from typing import Any, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic.alias_generators import to_camel

from opendps.model.enrollment import AttestationType, ProvisioningStatus
from opendps.model.errors import INVALID_BODY, DpsError
from opendps.model.hub import AllocationPolicy
from opendps.model.json import JsonObject
from opendps.model.registration import RegistrationStatus, Substatus

# Validation messages name at most this many problems; the rest add noise, not help.
MAX_REPORTED_PROBLEMS = 5

# Twin collections (`tags`, `desired`, `optionalDeviceInformation`) are stored and returned as sent.
TwinCollection: TypeAlias = JsonObject

M = TypeVar("M", bound=BaseModel)


class WireModel(BaseModel):
    """Base of every wire shape: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
    )


# -- attestation -----------------------------------------------------------------------------


class SymmetricKeyAttestation(WireModel):
    """Keys are omitted from GET and query answers; `{}` asks the service to generate them."""

    primary_key: StrictStr | None = None
    secondary_key: StrictStr | None = None


class TpmAttestation(WireModel):
    endorsement_key: StrictStr = Field(description="base64 of the EK's TPM2B_PUBLIC")
    storage_root_key: StrictStr | None = None


class X509CertificateInfo(WireModel):
    subject_name: StrictStr
    sha1_thumbprint: StrictStr
    sha256_thumbprint: StrictStr
    issuer_name: StrictStr
    not_before_utc: StrictStr = Field(json_schema_extra={"format": "date-time"})
    not_after_utc: StrictStr = Field(json_schema_extra={"format": "date-time"})
    serial_number: StrictStr
    version: StrictInt


class X509CertificateWithInfo(WireModel):
    """`certificate` is PEM, base64 PEM or base64 DER on input; `info` is computed, never read."""

    certificate: StrictStr | None = None
    info: X509CertificateInfo | None = None


class X509Certificates(WireModel):
    primary: X509CertificateWithInfo | None = None
    secondary: X509CertificateWithInfo | None = None


class X509CAReferences(WireModel):
    primary: StrictStr | None = None
    secondary: StrictStr | None = None


class X509Attestation(WireModel):
    """Exactly one of the three: individual enrollments use `clientCertificates`, groups use
    `signingCertificates` or `caReferences` (names of verified CA certificates)."""

    client_certificates: X509Certificates | None = None
    signing_certificates: X509Certificates | None = None
    ca_references: X509CAReferences | None = None


class AttestationMechanism(WireModel):
    type: AttestationType
    tpm: TpmAttestation | None = None
    x509: X509Attestation | None = None
    symmetric_key: SymmetricKeyAttestation | None = None


# -- enrollment settings ---------------------------------------------------------------------


class DeviceCapabilities(WireModel):
    iot_edge: StrictBool = False


class InitialTwinProperties(WireModel):
    desired: TwinCollection | None = None


class InitialTwin(WireModel):
    tags: TwinCollection | None = None
    properties: InitialTwinProperties | None = None


class ReprovisionPolicy(WireModel):
    update_hub_assignment: StrictBool = True
    migrate_device_data: StrictBool = True


class CustomAllocationDefinition(WireModel):
    webhook_url: StrictStr
    api_version: StrictStr


class DeviceRegistrationState(WireModel):
    """Read-only: the record of a device's provisioning (written by the service only)."""

    registration_id: StrictStr | None = None
    created_date_time_utc: StrictStr | None = Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    assigned_hub: StrictStr | None = None
    device_id: StrictStr | None = None
    status: RegistrationStatus | None = None
    substatus: Substatus | None = None
    error_code: StrictInt | None = None
    error_message: StrictStr | None = None
    last_updated_date_time_utc: StrictStr | None = Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    etag: StrictStr | None = None
    payload: Any = None


class _EnrollmentFields(WireModel):
    """What individual enrollments and enrollment groups share (protocol.md §7.2)."""

    attestation: AttestationMechanism
    capabilities: DeviceCapabilities | None = None
    iot_hub_host_name: StrictStr | None = None
    initial_twin: InitialTwin | None = None
    etag: StrictStr | None = None
    provisioning_status: ProvisioningStatus | None = None
    reprovision_policy: ReprovisionPolicy | None = None
    created_date_time_utc: StrictStr | None = Field(
        default=None, json_schema_extra={"format": "date-time", "readOnly": True}
    )
    last_updated_date_time_utc: StrictStr | None = Field(
        default=None, json_schema_extra={"format": "date-time", "readOnly": True}
    )
    allocation_policy: AllocationPolicy | None = None
    iot_hubs: list[StrictStr] | None = None
    custom_allocation_definition: CustomAllocationDefinition | None = None


class IndividualEnrollment(_EnrollmentFields):
    registration_id: StrictStr
    device_id: StrictStr | None = None
    registration_state: DeviceRegistrationState | None = Field(
        default=None, json_schema_extra={"readOnly": True}
    )
    optional_device_information: TwinCollection | None = None


class EnrollmentGroup(_EnrollmentFields):
    enrollment_group_id: StrictStr


# -- bulk and query ---------------------------------------------------------------------------


class BulkEnrollmentMode(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UPDATE_IF_MATCH_ETAG = "updateIfMatchETag"
    DELETE = "delete"


class BulkEnrollmentOperation(WireModel):
    mode: BulkEnrollmentMode
    enrollments: list[IndividualEnrollment]


class BulkEnrollmentGroupOperation(WireModel):
    mode: BulkEnrollmentMode
    enrollment_groups: list[EnrollmentGroup]


class BulkEnrollmentOperationError(WireModel):
    registration_id: StrictStr
    error_code: StrictInt
    error_status: StrictStr


class BulkEnrollmentGroupOperationError(WireModel):
    enrollment_group_id: StrictStr
    error_code: StrictInt
    error_status: StrictStr


class BulkEnrollmentOperationResult(WireModel):
    is_successful: StrictBool
    errors: list[BulkEnrollmentOperationError] = Field(default_factory=list)


class BulkEnrollmentGroupOperationResult(WireModel):
    is_successful: StrictBool
    errors: list[BulkEnrollmentGroupOperationError] = Field(default_factory=list)


class QuerySpecification(WireModel):
    """Any query text selects everything (clients send `*`, `SELECT *`, `SELECT * FROM ...`)."""

    query: StrictStr


class ProvisioningServiceErrorDetails(WireModel):
    """The body of every error (protocol.md §1.6); rendered by `model.errors.error_body`."""

    error_code: StrictInt
    tracking_id: StrictStr
    message: StrictStr
    timestamp_utc: StrictStr
    info: dict[str, Any] = Field(default_factory=dict)


# -- parsing ------------------------------------------------------------------------------------


def parse_body(model: type[M], body: bytes) -> M:
    """Validate a JSON request body against `model`.

    Raises DpsError(INVALID_BODY) naming what is wrong (never quoting values, which may be keys).
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        raise DpsError(INVALID_BODY, validation_message(err)) from None


def parse_object(model: type[M], value: Any) -> M:
    """Validate an already-decoded JSON value (for example one item of a larger body)."""
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise DpsError(INVALID_BODY, validation_message(err)) from None


def validation_message(err: ValidationError) -> str:
    """`Invalid request body: attestation.type: Input should be ...` without input values."""
    problems = []
    for error in err.errors(include_input=False, include_url=False)[:MAX_REPORTED_PROBLEMS]:
        if error["type"] == "json_invalid":
            return "Request body is not valid JSON."
        where = _format_location(error["loc"])
        problems.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "Invalid request body: " + "; ".join(problems) + "."


def _format_location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def dump(model: BaseModel) -> dict[str, Any]:
    """The wire form of a model as JSON-ready data (absent values omitted, not null)."""
    return model.model_dump(mode="json", exclude_none=True)


def dump_json(value: BaseModel | list[Any]) -> bytes:
    """The wire form of a model, or of a list of models (query answers are JSON arrays)."""
    if isinstance(value, BaseModel):
        return value.model_dump_json(exclude_none=True).encode()
    return (
        "[" + ",".join(item.model_dump_json(exclude_none=True) for item in value) + "]"
    ).encode()
