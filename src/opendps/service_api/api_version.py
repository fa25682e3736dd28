"""The `api-version` values the service API accepts (protocol.md §0).

Clients pin one version each (Node and Python 2021-10-01, the legacy Python client
2018-09-01-preview, C# and Java 2019-03-31, ...); every one is answered with the 2021-10-01
shapes, which are a superset of the older ones for everything these clients read.
"""

from __future__ import annotations

import re

from opendps.model.errors import API_VERSION_MISSING, API_VERSION_UNSUPPORTED, DpsError

API_VERSION_PARAMETER = "api-version"
# The shapes every answer uses, whatever version was asked for.
WIRE_API_VERSION = "2021-10-01"
SUPPORTED_API_VERSIONS = frozenset(
    {
        "2018-09-01-preview",
        "2019-03-31",
        "2021-06-01",
        "2021-10-01",
        "2021-11-01-preview",
        "2025-07-01-preview",
    }
)
# Azure published several 2022 versions (stable and preview); the contract accepts them all.
_ANY_2022 = re.compile(r"^2022-\d{2}-\d{2}(-preview)?$")


def is_supported_api_version(value: str) -> bool:
    return value in SUPPORTED_API_VERSIONS or bool(_ANY_2022.match(value))


def check_api_version(value: str | None) -> str:
    """Return the requested version; raise DpsError(400) when it is missing or unknown."""
    if value is None or not value.strip():
        raise DpsError(
            API_VERSION_MISSING, f"The {API_VERSION_PARAMETER} query parameter is required."
        )
    if not is_supported_api_version(value.strip()):
        raise DpsError(
            API_VERSION_UNSUPPORTED,
            f"The {API_VERSION_PARAMETER} '{value.strip()[:40]}' is not supported; "
            f"use {WIRE_API_VERSION}.",
        )
    return value.strip()
