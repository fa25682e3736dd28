"""The adapter's pure translations: DPS errors → AMQP conditions, bodies, reply properties."""

from __future__ import annotations

import pytest

from opendps.engine.api import OperationStatus
from opendps.model.errors import (
    BAD_REQUEST,
    CONCURRENT_REGISTRATION,
    INTERNAL_ERROR,
    INVALID_BODY,
    OPERATION_NOT_FOUND,
    THROTTLED,
    UNAUTHORIZED,
    DpsError,
)
from opendps.model.registration import RegistrationStatus
from opendps.transports.amqp.adapter import _data_section, _reply, error_condition
from opendps.transports.amqp.driver import RegistrationAddress, RequestReceived
from opendps.transports.bodies import DeviceRegistrationBody, parse_device_registration


@pytest.mark.parametrize(
    ("code", "condition"),
    [
        (UNAUTHORIZED, "amqp:unauthorized-access"),
        (OPERATION_NOT_FOUND, "amqp:not-found"),
        (BAD_REQUEST, "com.microsoft:argument-error"),
        (CONCURRENT_REGISTRATION, "com.microsoft:precondition-failed"),
        (THROTTLED, "com.microsoft:device-container-throttled"),
        (INTERNAL_ERROR, "amqp:internal-error"),
    ],
)
def test_dps_errors_map_to_the_conditions_node_translates(code: int, condition: str) -> None:
    assert error_condition(DpsError(code, "x")) == condition


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, DeviceRegistrationBody(None, None)),
        (b"", DeviceRegistrationBody(None, None)),
        ("  ", DeviceRegistrationBody(None, None)),
        (b'{"registrationId":"d","payload":{"a":1}}', DeviceRegistrationBody("d", {"a": 1})),
        ('{"registrationId":"d"}', DeviceRegistrationBody("d", None)),
    ],
)
def test_registration_bodies_are_read_from_data_sections_and_strings(
    body: object, expected: DeviceRegistrationBody
) -> None:
    assert parse_device_registration(_data_section(body)) == expected


@pytest.mark.parametrize(
    ("body", "code"), [(b"not json", BAD_REQUEST), (b"[1]", INVALID_BODY), (42, INVALID_BODY)]
)
def test_bad_registration_bodies_raise_dps_errors(body: object, code: int) -> None:
    with pytest.raises(DpsError) as caught:
        parse_device_registration(_data_section(body))
    assert caught.value.error_code == code


def test_assigning_reply_carries_retry_after_and_status_properties() -> None:
    request = RequestReceived(1, RegistrationAddress("s", "d"), "iotdps-register", None, "c", b"")

    reply = _reply(request, OperationStatus("op-1", RegistrationStatus.ASSIGNING, retry_after=3))

    assert reply.properties == {
        "iotdps-operation-type": "iotdps-register",
        "iotdps-status": "assigning",
        "retry-after": "3",
    }
    assert reply.body == b'{"operationId":"op-1","status":"assigning"}'
