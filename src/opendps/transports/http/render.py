"""Engine results and DpsError → DPS JSON over HTTP (protocol.md §1.4–§1.6).

The only place the device REST API's wire shapes are written. Every response says
`Content-Type: application/json; charset=utf-8` (Node parses a body only when the content type
contains `application/json`) and carries `x-ms-request-id`; `assigning` answers and 429s carry
`retry-after` in whole seconds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from opendps.engine.api import OperationStatus, RegistrationResult
from opendps.model.enrollment import AttestationType
from opendps.model.errors import DpsError, error_body, format_utc

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def registration_state_body(result: RegistrationResult) -> dict[str, Any]:
    """`DeviceRegistrationResult`, keys in Azure's order; absent values are left out."""
    body: dict[str, Any] = {}
    group = {"enrollmentGroupId": result.enrollment_group_id} if result.enrollment_group_id else {}
    if result.attestation_type is AttestationType.SYMMETRIC_KEY:
        body["symmetricKey"] = group
    elif result.attestation_type is AttestationType.X509:
        body["x509"] = group
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


def operation_body(status: OperationStatus) -> dict[str, Any]:
    """`RegistrationOperationStatus`."""
    body: dict[str, Any] = {"operationId": status.operation_id, "status": str(status.status)}
    if status.registration is not None:
        body["registrationState"] = registration_state_body(status.registration)
    return body


def json_response(
    body: Any,
    *,
    status: int,
    request_id: str,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    response = web.Response(
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        status=status,
        headers={
            "Content-Type": JSON_CONTENT_TYPE,
            "x-ms-request-id": request_id,
            **(headers or {}),
        },
    )
    if retry_after is not None:
        response.headers["retry-after"] = str(retry_after)
    return response


def render_operation(status: OperationStatus, *, request_id: str) -> web.Response:
    """Terminal statuses (assigned, failed, disabled) answer 200; `assigning` answers 202."""
    code = 200 if status.is_terminal else 202
    return json_response(
        operation_body(status), status=code, request_id=request_id, retry_after=status.retry_after
    )


def render_registration(result: RegistrationResult, *, request_id: str) -> web.Response:
    return json_response(registration_state_body(result), status=200, request_id=request_id)


def render_error(error: DpsError, *, request_id: str, now: datetime | None = None) -> web.Response:
    """`ProvisioningServiceErrorDetails` with status errorCode // 1000 (§1.6)."""
    moment = now or datetime.now(UTC)
    body = error_body(error, tracking_id=request_id, timestamp_utc=format_utc(moment))
    return json_response(
        body,
        status=error.http_status,
        request_id=request_id,
        retry_after=error.retry_after,
        headers={"x-ms-error-code": str(error.error_code)},
    )
