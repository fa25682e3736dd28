"""Engine results and DpsError → DPS JSON over HTTP (protocol.md §1.4–§1.6).

The only place the device REST API's wire shapes are written. Every response says
`Content-Type: application/json; charset=utf-8` (Node parses a body only when the content type
contains `application/json`) and carries `x-ms-request-id`; `assigning` answers and 429s carry
`retry-after` in whole seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from opendps.engine.api import OperationStatus, RegistrationResult
from opendps.model.errors import DpsError, error_body, format_utc
from opendps.transports.bodies import encode_json, operation_body, registration_state_body

# Re-exported: the body builders moved to transports/bodies.py, shared with MQTT and AMQP.
__all__ = [
    "JSON_CONTENT_TYPE",
    "json_response",
    "operation_body",
    "registration_state_body",
    "render_error",
    "render_operation",
    "render_registration",
]

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def json_response(
    body: Any,
    *,
    status: int,
    request_id: str,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    response = web.Response(
        body=encode_json(body),
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
