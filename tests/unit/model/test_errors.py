from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from opendps.model import errors
from opendps.model.errors import UNAUTHORIZED, DpsError, error_body, format_utc

DOC = Path(__file__).parents[3] / "docs" / "errors.md"


def _catalogue() -> dict[str, int]:
    return {
        name: value
        for name, value in vars(errors).items()
        if name.isupper() and isinstance(value, int)
    }


def test_every_error_code_keeps_azures_status_times_thousand_form() -> None:
    for name, code in _catalogue().items():
        assert 400 <= code // 1000 <= 599, name
        assert DpsError(code, "x").http_status == code // 1000


def test_every_error_code_is_documented_with_its_name_and_status() -> None:
    documented = {
        (int(code), int(status), name)
        for code, status, name in re.findall(
            r"^\| (\d{6}) \| (\d{3}) \| (\w+) \|", DOC.read_text(), re.M
        )
    }
    assert documented == {(code, code // 1000, name) for name, code in _catalogue().items()}


def test_error_codes_are_unique() -> None:
    codes = list(_catalogue().values())
    assert len(codes) == len(set(codes))


def test_error_body_has_the_provisioning_service_error_details_shape() -> None:
    body = error_body(
        DpsError(UNAUTHORIZED, "Unauthorized"), tracking_id="t-1", timestamp_utc="now"
    )
    assert body == {
        "errorCode": 401002,
        "trackingId": "t-1",
        "message": "Unauthorized",
        "timestampUtc": "now",
        "info": {},
    }


def test_timestamps_have_seven_fractional_digits_and_z_like_azure() -> None:
    moment = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert format_utc(moment) == "2024-05-01T10:00:00.1234560Z"
