"""The JSON bodies every device transport answers with (protocol.md §1.4, §1.6).

HTTPS sends them as response bodies, MQTT as response payloads (protocol.md §3: "the same JSON
the HTTP API would return"), AMQP as message bodies. Transport-neutral: dicts in Azure's key
order, no framing; each transport serialises them with `encode_json`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from opendps.engine.api import OperationStatus, RegistrationResult
from opendps.model.enrollment import AttestationType, X509CertificateInfo
from opendps.model.errors import BAD_REQUEST, INVALID_BODY, DpsError, format_utc

__all__ = [
    "DeviceRegistrationBody",
    "TpmKeysBody",
    "certificate_info_body",
    "encode_json",
    "operation_body",
    "parse_device_registration",
    "registration_state_body",
    "tpm_challenge_body",
    "x509_sub_result",
]


def registration_state_body(result: RegistrationResult) -> dict[str, Any]:
    """`DeviceRegistrationResult`, keys in Azure's order; absent values are left out."""
    body: dict[str, Any] = {}
    group = {"enrollmentGroupId": result.enrollment_group_id} if result.enrollment_group_id else {}
    if result.attestation_type is AttestationType.SYMMETRIC_KEY:
        body["symmetricKey"] = group
    elif result.attestation_type is AttestationType.X509:
        body["x509"] = x509_sub_result(result)
    elif result.attestation_type is AttestationType.TPM:
        # `TpmRegistrationResult` (§6.2 step 6): on `assigned`, the hub key wrapped for the TPM.
        # The C SDK fails to parse an `assigned` answer without it.
        key = result.tpm_authentication_key
        body["tpm"] = {"authenticationKey": _b64(key)} if key is not None else {}
    body["registrationId"] = result.registration_id
    if result.created_at is not None:
        body["createdDateTimeUtc"] = format_utc(result.created_at)
    if result.assigned_hub is not None:
        body["assignedHub"] = result.assigned_hub
    if result.device_id is not None:
        body["deviceId"] = result.device_id
    body["status"] = str(result.status)
    if result.substatus is not None:
        body["substatus"] = str(result.substatus)
    if result.error_code is not None:
        body["errorCode"] = result.error_code
        body["errorMessage"] = result.error_message or ""
    if result.updated_at is not None:
        body["lastUpdatedDateTimeUtc"] = format_utc(result.updated_at)
    if result.etag is not None:
        body["etag"] = result.etag
    if result.payload is not None:
        body["payload"] = result.payload
    return body


def x509_sub_result(result: RegistrationResult) -> dict[str, Any]:
    """`X509RegistrationResult` (§1.4): the device's certificate, its group, and the CA that
    matched, each present when known."""
    body: dict[str, Any] = {}
    if result.certificate_info is not None:
        body["certificateInfo"] = certificate_info_body(result.certificate_info)
    if result.enrollment_group_id:
        body["enrollmentGroupId"] = result.enrollment_group_id
    if result.signing_certificate_info is not None:
        body["signingCertificateInfo"] = certificate_info_body(result.signing_certificate_info)
    return body


def certificate_info_body(info: X509CertificateInfo) -> dict[str, Any]:
    """`X509CertificateInfo`: every field is required in the spec."""
    return {
        "subjectName": info.subject_name,
        "sha1Thumbprint": info.sha1_thumbprint,
        "sha256Thumbprint": info.sha256_thumbprint,
        "issuerName": info.issuer_name,
        "notBeforeUtc": format_utc(info.not_before_utc),
        "notAfterUtc": format_utc(info.not_after_utc),
        "serialNumber": info.serial_number,
        "version": info.version,
    }


def operation_body(status: OperationStatus) -> dict[str, Any]:
    """`RegistrationOperationStatus`."""
    body: dict[str, Any] = {"operationId": status.operation_id, "status": str(status.status)}
    if status.registration is not None:
        body["registrationState"] = registration_state_body(status.registration)
    return body


def tpm_challenge_body(authentication_key: bytes) -> dict[str, Any]:
    """The 401 body of a TPM device's first request (protocol.md §6.2 step 2). `keyName` must be
    there: the C SDK fails to parse the challenge without it."""
    return {"authenticationKey": _b64(authentication_key), "keyName": "registration"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_json(body: Any) -> bytes:
    """Compact UTF-8 JSON, as Azure sends it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class DeviceRegistrationBody:
    """What a register request carries (`DeviceRegistration`, protocol.md §1.3)."""

    registration_id: str | None
    # Any JSON value, forwarded verbatim to the custom allocation webhook (Python sends null).
    payload: Any
    # TPM devices (§6.2): their endorsement and storage root keys, raw TPM2B_PUBLIC bytes.
    tpm: TpmKeysBody | None = None


@dataclass(frozen=True, slots=True)
class TpmKeysBody:
    """`tpm` of a DeviceRegistration: `{"endorsementKey", "storageRootKey"}` in base64."""

    endorsement_key: bytes
    storage_root_key: bytes


def parse_device_registration(raw: bytes | str | None) -> DeviceRegistrationBody:
    """The HTTP body, MQTT payload or AMQP data section of a register request.

    No body or an empty one counts as `{}`. Raises DpsError(400000) for text that is not JSON
    and DpsError(400004) for JSON that is not an object or whose `registrationId` is not a
    string, or whose `tpm` is not `{"endorsementKey", "storageRootKey"}` in base64 (the keys'
    structure is checked by the TPM attestation).
    """
    if raw is None or not raw.strip():
        return DeviceRegistrationBody(None, None)
    try:
        body = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        raise DpsError(BAD_REQUEST, "The DeviceRegistration body is not JSON.") from None
    if not isinstance(body, dict):
        raise DpsError(INVALID_BODY, "The DeviceRegistration body must be a JSON object.")
    registration_id = body.get("registrationId")
    if registration_id is not None and not isinstance(registration_id, str):
        raise DpsError(INVALID_BODY, "registrationId must be a string.")
    return DeviceRegistrationBody(registration_id, body.get("payload"), _tpm_keys(body.get("tpm")))


def _tpm_keys(value: Any) -> TpmKeysBody | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DpsError(INVALID_BODY, "tpm must be an object.")
    return TpmKeysBody(
        _base64_field(value.get("endorsementKey"), "tpm.endorsementKey"),
        _base64_field(value.get("storageRootKey"), "tpm.storageRootKey"),
    )


def _base64_field(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise DpsError(INVALID_BODY, f"{name} is required and must be a base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DpsError(INVALID_BODY, f"{name} is not valid base64.") from None
