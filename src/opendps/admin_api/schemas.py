"""Request and response bodies of the OpenDPS admin API (`/admin/v1`): the one schema source.

Validation, serialisation and the OpenAPI document (admin_api/openapi.py) all come from these
pydantic models. Wire names are camelCase, as in the DPS service API; Python names stay
snake_case. Lists are wrapped as `{"value": [...]}` (Azure resource-manager style) so that
paging can be added without breaking clients.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, ValidationError
from pydantic.alias_generators import to_camel

from opendps.model.errors import INVALID_BODY, DpsError, format_utc
from opendps.model.hub import AllocationPolicy
from opendps.model.ids import NAME_MAX_LENGTH

# Azure's allocation weights are small positive integers; 1000 keeps the hashed ring cheap.
MAX_ALLOCATION_WEIGHT = 1000
# DNS: a host name is at most 253 characters (RFC 1035 §2.3.4).
HOST_NAME_MAX_LENGTH = 253
# How many validation problems one error message lists; the rest are summarised.
_MAX_REPORTED_PROBLEMS = 5

UtcDateTime = Annotated[datetime, PlainSerializer(format_utc, return_type=str)]
KeyName = Literal["primary", "secondary"]


class WireModel(BaseModel):
    """camelCase on the wire, unknown fields refused (a typo must not be silently ignored)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


# -- instances and allocation ------------------------------------------------------------------


class CustomAllocationDefinitionBody(WireModel):
    """The webhook of the `custom` allocation policy (protocol.md §8)."""

    webhook_url: str = Field(min_length=1, max_length=2048)
    api_version: str = Field(min_length=1, max_length=64)


class AllocationPolicySettings(WireModel):
    """The instance-level allocation policy; `customAllocationDefinition` only with `custom`."""

    allocation_policy: AllocationPolicy
    custom_allocation_definition: CustomAllocationDefinitionBody | None = None


class InstanceCreate(WireModel):
    name: str = Field(max_length=NAME_MAX_LENGTH)
    # Default: `<name>.<first public host>`; the service API picks the instance by Host header.
    service_host_name: str | None = Field(default=None, max_length=HOST_NAME_MAX_LENGTH)
    allocation_policy: AllocationPolicy = AllocationPolicy.HASHED


class InstanceCounts(WireModel):
    individual_enrollments: int
    enrollment_groups: int
    linked_hubs: int
    ca_certificates: int
    access_policies: int


class InstanceSummary(WireModel):
    name: str
    id_scope: str
    service_host_name: str
    allocation_policy: AllocationPolicy
    created_date_time_utc: UtcDateTime


class InstanceList(WireModel):
    value: list[InstanceSummary]


# -- linked hubs ------------------------------------------------------------------------------


class HubCreate(WireModel):
    host_name: str = Field(min_length=1, max_length=HOST_NAME_MAX_LENGTH)
    # Only the built-in hub connector exists in this version.
    kind: Literal["builtin"] = "builtin"
    allocation_weight: int = Field(default=1, ge=1, le=MAX_ALLOCATION_WEIGHT)
    apply_allocation_policy: bool = True
    location: str | None = Field(default=None, max_length=64)


class HubUpdate(WireModel):
    """Fields left out stay as they are; `location: null` clears the location."""

    allocation_weight: int | None = Field(default=None, ge=1, le=MAX_ALLOCATION_WEIGHT)
    apply_allocation_policy: bool | None = None
    location: str | None = Field(default=None, max_length=64)


class Hub(WireModel):
    host_name: str
    kind: str
    allocation_weight: int
    apply_allocation_policy: bool
    location: str | None
    # Connector settings with every credential masked: never returned in full.
    connection: dict[str, str]
    etag: str
    created_date_time_utc: UtcDateTime | None
    last_updated_date_time_utc: UtcDateTime | None


class HubList(WireModel):
    value: list[Hub]


class InstanceDetail(InstanceSummary):
    custom_allocation_definition: CustomAllocationDefinitionBody | None
    etag: str
    hubs: list[Hub]
    counts: InstanceCounts


# -- access policies --------------------------------------------------------------------------


class PolicyCreate(WireModel):
    name: str = Field(max_length=NAME_MAX_LENGTH)
    # Azure's `AccessRightsDescription` names: ServiceConfig, EnrollmentRead, EnrollmentWrite,
    # DeviceConnect, RegistrationStatusRead, RegistrationStatusWrite (protocol.md §7.4).
    rights: list[str] = Field(min_length=1, max_length=6)
    # Generated when left out (64 random bytes, as Azure's keys).
    primary_key: str | None = Field(default=None, max_length=256)
    secondary_key: str | None = Field(default=None, max_length=256)


class KeyRegeneration(WireModel):
    key: KeyName


class PolicySummary(WireModel):
    name: str
    rights: list[str]


class PolicyWithKeys(PolicySummary):
    primary_key: str
    secondary_key: str
    primary_connection_string: str
    secondary_connection_string: str


class PolicyList(WireModel):
    value: list[PolicySummary]


class InstanceCreated(InstanceDetail):
    """The new instance and its owner policy: the only time the owner keys come unasked."""

    owner_policy: PolicyWithKeys


# -- CA certificates --------------------------------------------------------------------------


class CertificateUpload(WireModel):
    name: str = Field(max_length=NAME_MAX_LENGTH)
    # PEM text, base64 of DER (.cer) or base64 of PEM text; the public certificate only.
    certificate: str = Field(min_length=1)
    # Azure's "set status to verified on upload" (self-attestation, no proof of possession).
    is_verified: bool = False


class ProofOfPossession(WireModel):
    # The verification certificate: CN = the verification code, signed by the CA.
    certificate: str = Field(min_length=1)


class Certificate(WireModel):
    name: str
    subject: str
    thumbprint: str  # SHA-1, upper-case hex (Azure's `thumbprint`)
    sha256_thumbprint: str
    not_before_utc: UtcDateTime
    not_after_utc: UtcDateTime
    is_verified: bool
    etag: str
    certificate: str  # PEM: the public part only
    created_date_time_utc: UtcDateTime | None
    last_updated_date_time_utc: UtcDateTime | None


class CertificateList(WireModel):
    value: list[Certificate]


class VerificationCode(WireModel):
    name: str
    verification_code: str
    subject: str
    is_verified: bool
    etag: str


# -- metering and audit -----------------------------------------------------------------------


class MeterRow(WireModel):
    day: date
    kind: str
    count: int


class Metering(WireModel):
    instance: str
    since: date | None
    value: list[MeterRow]
    totals: dict[str, int]


class AuditRecord(WireModel):
    id: int | None
    at: UtcDateTime
    instance: str | None  # instance name; None for deployment-wide changes
    actor: str
    action: str
    target: str


class AuditPage(WireModel):
    value: list[AuditRecord]
    # Pass as `before=` to get the next (older) page; absent on the last page.
    next_before: int | None


# -- built-in hub devices -------------------------------------------------------------------------


class HubDeviceTwin(WireModel):
    """The device twin: tags, and desired and reported properties with their versions."""

    tags: dict[str, Any]
    desired: dict[str, Any]
    reported: dict[str, Any]
    desired_version: int
    reported_version: int


class HubDeviceSummary(WireModel):
    device_id: str
    authentication_kind: str
    iot_edge: bool
    status: str
    last_updated_date_time_utc: UtcDateTime | None


class HubDevicePage(WireModel):
    value: list[HubDeviceSummary]
    # Pass as `after=` to get the next page; absent on the last page.
    next_after: str | None


class HubDevice(WireModel):
    """A device of a built-in hub; keys are masked (thumbprints are not secrets)."""

    device_id: str
    hub_host_name: str
    authentication_kind: str
    authentication: dict[str, str]
    iot_edge: bool
    status: str
    twin: HubDeviceTwin
    etag: str
    created_date_time_utc: UtcDateTime | None
    last_updated_date_time_utc: UtcDateTime | None


# -- allocation explain and webhook checks -------------------------------------------------------


class AllocationPolicySaved(WireModel):
    """The saved instance allocation policy, with the save-time webhook check's warnings."""

    allocation_policy: AllocationPolicy
    custom_allocation_definition: CustomAllocationDefinitionBody | None = None
    # Only when the dry-run call to a custom webhook failed: the policy is saved, but devices
    # would fail.
    warnings: list[str] = Field(default_factory=list)


class ExplainRequest(WireModel):
    registration_id: str = Field(min_length=1, max_length=128)
    # The device payload a custom allocation webhook would receive (any JSON value).
    payload: Any = None


class ExplainedHub(WireModel):
    host_name: str
    allocation_weight: int
    apply_allocation_policy: bool
    location: str | None
    # Whether allocation may choose this hub for this enrollment.
    candidate: bool


class ExplainedWebhook(WireModel):
    """The custom allocation webhook's answer to the dry-run request."""

    iot_hub_host_name: str | None
    initial_twin: dict[str, Any] | None
    payload: Any
    error_code: int | None
    error_message: str | None


class ExplainedReprovisioning(WireModel):
    substatus: str
    # initial, migrate (copied from the old hub) or keep (the hub's twin stays).
    twin: str
    removes_from_hub: str | None
    removes_device_id: str | None


class ExplainedDecision(WireModel):
    enrollment_kind: str
    enrollment_id: str
    attestation_type: str
    provisioning_status: str
    matched_by: str
    allocation_policy: AllocationPolicy
    # `enrollment` or `instance`: whose policy applies.
    policy_source: str
    hubs: list[ExplainedHub]
    # What the registration would end as: assigned, failed or disabled.
    outcome: str
    reason: str
    assigned_hub: str | None
    device_id: str | None
    initial_twin: dict[str, Any] | None
    reprovisioning: ExplainedReprovisioning | None
    webhook: ExplainedWebhook | None
    error_code: int | None
    error_message: str | None


class ExplainedRegistration(WireModel):
    """The device's current registration state, which reprovisioning starts from."""

    status: str
    assigned_hub: str | None
    device_id: str | None
    enrollment_group_id: str | None
    substatus: str | None
    previous_hubs: list[str]


class AllocationExplanation(WireModel):
    registration_id: str
    # Nothing was registered: this is what a registration would meet now.
    dry_run: bool
    summary: str
    previous_registration: ExplainedRegistration | None
    decisions: list[ExplainedDecision]


# -- bulk import -------------------------------------------------------------------------------


class ImportLineError(WireModel):
    line: int  # 1-based line (NDJSON) or element number (JSON array)
    registration_id: str | None
    error_code: int
    message: str


class ImportResult(WireModel):
    imported: int
    failed: int
    errors: list[ImportLineError]
    # True when more lines failed than `errors` lists.
    errors_truncated: bool


# -- parsing ------------------------------------------------------------------------------------

M = TypeVar("M", bound=WireModel)


def parse_body(model: type[M], raw: bytes) -> M:
    """Parse a JSON request body into `model`, or raise DpsError(400004).

    The message names each problem's field and reason but never the offending value, which
    may be a key.
    """
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DpsError(INVALID_BODY, "The body is not valid JSON.") from None
    return validate_body(model, data)


def validate_body(model: type[M], data: object) -> M:
    """Validate already-decoded JSON into `model`, or raise DpsError(400004)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise DpsError(INVALID_BODY, describe_validation_error(err)) from None


def describe_validation_error(err: ValidationError) -> str:
    problems = []
    for problem in err.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        problems.append(f"{where}: {problem['msg']}")
    more = len(problems) - _MAX_REPORTED_PROBLEMS
    text = "; ".join(problems[:_MAX_REPORTED_PROBLEMS])
    if more > 0:
        text += f"; and {more} more"
    return f"Invalid body: {text}."


def to_json(model: WireModel) -> str:
    """The wire form of a response model (camelCase, timestamps in Azure's form)."""
    return model.model_dump_json(by_alias=True)
