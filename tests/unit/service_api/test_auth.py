"""Pure parts of service authentication; the store-backed flow is in tests/integration."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from opendps.model.errors import RIGHT_MISSING, DpsError
from opendps.model.hub import AllocationPolicy
from opendps.model.instance import ALL_RIGHTS, Instance, Right
from opendps.service_api.auth import Caller, host_without_port, require_right

NOW = datetime(2026, 1, 1, tzinfo=UTC)
INSTANCE = Instance(
    "i1",
    "default",
    "0ne00000001",
    "dps.example.net",
    AllocationPolicy.HASHED,
    None,
    '"e"',
    NOW,
    NOW,
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", "localhost"),
        ("LocalHost:59444", "localhost"),
        ("dps.example.net:443", "dps.example.net"),
        ("https://dps.example.net:8443/", "dps.example.net"),
        ("[::1]:443", "::1"),
        ("[::1]", "::1"),
        ("127.0.0.1:8443", "127.0.0.1"),
        ("", ""),
    ],
)
def test_host_names_lose_their_port_scheme_and_case(host: str, expected: str) -> None:
    assert host_without_port(host) == expected


def test_a_policy_with_the_right_passes() -> None:
    require_right(Caller(INSTANCE, "owner", ALL_RIGHTS), Right.ENROLLMENT_WRITE)


def test_a_policy_without_the_right_is_refused_with_401003_naming_the_right() -> None:
    caller = Caller(INSTANCE, "reader", Right.ENROLLMENT_READ)
    with pytest.raises(DpsError) as err:
        require_right(caller, Right.ENROLLMENT_WRITE)
    assert err.value.error_code == RIGHT_MISSING and err.value.http_status == 401
    assert "EnrollmentWrite" in err.value.message and "reader" in err.value.message
    require_right(
        replace(caller, rights=Right.ENROLLMENT_READ | Right.ENROLLMENT_WRITE),
        Right.ENROLLMENT_WRITE,
    )
