"""api-version acceptance (protocol.md §0)."""

from __future__ import annotations

import pytest

from opendps.model.errors import API_VERSION_MISSING, API_VERSION_UNSUPPORTED, DpsError
from opendps.service_api.api_version import check_api_version, is_supported_api_version


@pytest.mark.parametrize(
    "version",
    [
        "2018-09-01-preview",
        "2019-03-31",
        "2021-06-01",
        "2021-10-01",
        "2021-11-01-preview",
        "2022-02-05",
        "2022-12-12-preview",
        "2025-07-01-preview",
    ],
)
def test_every_version_a_known_client_sends_is_accepted(version: str) -> None:
    assert is_supported_api_version(version)
    assert check_api_version(version) == version


@pytest.mark.parametrize("version", [None, "", "  "])
def test_a_missing_api_version_is_refused_with_400002(version: str | None) -> None:
    with pytest.raises(DpsError) as err:
        check_api_version(version)
    assert err.value.error_code == API_VERSION_MISSING and err.value.http_status == 400


@pytest.mark.parametrize(
    "version", ["2017-11-15", "2021-10-02", "latest", "2022-1-1", "2023-01-01"]
)
def test_an_unknown_api_version_is_refused_with_400003(version: str) -> None:
    with pytest.raises(DpsError) as err:
        check_api_version(version)
    assert err.value.error_code == API_VERSION_UNSUPPORTED
