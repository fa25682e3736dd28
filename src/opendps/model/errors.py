"""The one error vocabulary of OpenDPS.

Core code raises `DpsError`; each transport and API turns it into its wire form in exactly one
place. Codes follow Azure DPS's rule `errorCode = HTTP status * 1000 + detail` (protocol.md
§1.6): the C# AMQP transport computes `status = errorCode // 1000`, so every code keeps that form.
Codes Azure is known to use are marked "observed"; the others follow the same pattern and are
documented in docs/errors.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# 400: the request is malformed or names something invalid.
BAD_REQUEST = 400000
INVALID_REGISTRATION_ID = 400001
API_VERSION_MISSING = 400002
API_VERSION_UNSUPPORTED = 400003
INVALID_BODY = 400004
BULK_TOO_MANY = 400005
INVALID_CERTIFICATE_FORMAT = 400006
INVALID_ID = 400007
INVALID_QUERY_CONTINUATION = 400008
CERTIFICATE_VERIFICATION_FAILED = 400009
NO_HUB = 400208  # observed: no IoT hub could be assigned
HUB_UNAUTHORIZED = 400209  # observed: DPS not authorised on the target hub

# 401: authentication failed. Devices never learn *why* (DPS does not reveal enrollments).
UNAUTHORIZED_DEVICE = 401000  # observed on MQTT
UNAUTHORIZED = 401002  # observed: bad SAS, unknown enrollment, rejected certificate
RIGHT_MISSING = 401003  # the access policy exists and signed correctly but lacks the right

# 404: the addressed resource does not exist.
NOT_FOUND = 404000
ENROLLMENT_NOT_FOUND = 404201  # observed
REGISTRATION_NOT_FOUND = 404202  # observed on the service API
ENROLLMENT_GROUP_NOT_FOUND = 404203
CA_CERTIFICATE_NOT_FOUND = 404204
LINKED_HUB_NOT_FOUND = 404205
INSTANCE_NOT_FOUND = 404206
ACCESS_POLICY_NOT_FOUND = 404207
OPERATION_NOT_FOUND = 404208
ID_SCOPE_NOT_FOUND = 404209
HUB_DEVICE_NOT_FOUND = 404210

METHOD_NOT_ALLOWED = 405000

# 409: the write conflicts with what is stored.
ALREADY_EXISTS = 409201
CONCURRENT_REGISTRATION = 409203  # observed: "Precondition failed." on concurrent registration
CONFLICT = 409204
QUOTA_EXCEEDED = 409205

ETAG_MISMATCH = 412002
BODY_TOO_LARGE = 413000
UNSUPPORTED_MEDIA_TYPE = 415000
THROTTLED = 429001
INTERNAL_ERROR = 500000
HUB_OPERATION_FAILED = 500209  # the hub connector failed to create, read or delete the device
CUSTOM_ALLOCATION_FAILED = 500210  # the custom allocation webhook failed or answered badly
SERVICE_UNAVAILABLE = 503000
CUSTOM_ALLOCATION_TIMEOUT = 504210  # the custom allocation webhook did not answer in time


class DpsError(Exception):
    """A failure with a DPS error code, safe to show to the caller.

    `message` must never contain a secret (key, token, private key): it is logged and sent.
    """

    def __init__(
        self,
        error_code: int,
        message: str,
        *,
        retry_after: int | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.retry_after = retry_after
        self.info = info or {}

    @property
    def http_status(self) -> int:
        return self.error_code // 1000

    def __repr__(self) -> str:
        return f"DpsError({self.error_code}, {self.message!r})"


def error_body(error: DpsError, *, tracking_id: str, timestamp_utc: str) -> dict[str, Any]:
    """`ProvisioningServiceErrorDetails`: the body of every error on every transport (§1.6)."""
    return {
        "errorCode": error.error_code,
        "trackingId": tracking_id,
        "message": error.message,
        "timestampUtc": timestamp_utc,
        "info": error.info,
    }


def format_utc(moment: datetime) -> str:
    """Azure's timestamp form: ISO-8601 UTC, 7 fractional digits, `Z` (protocol.md §1.4)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
