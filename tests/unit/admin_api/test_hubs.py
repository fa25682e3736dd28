"""Hub names and credential masking."""

from __future__ import annotations

import pytest

from opendps.admin_api.hubs import builtin_hub_host_name, mask_connection, parse_host_name
from opendps.model.errors import INVALID_ID, DpsError


def test_builtin_hub_name_is_derived_from_the_instance_name() -> None:
    assert builtin_hub_host_name("Contoso_East") == "contoso-east.builtin-hub.localhost"


@pytest.mark.parametrize(
    "name", ["hub.example.net", "HUB-1.Example.NET", "localhost", "a" * 63 + ".net"]
)
def test_dns_host_names_are_accepted_lower_cased(name: str) -> None:
    assert parse_host_name(name) == name.lower()


@pytest.mark.parametrize(
    "name", ["", "-hub.example", "hub_.example", "hub example", "a" * 64 + ".net", "hub..net"]
)
def test_other_host_names_are_refused(name: str) -> None:
    with pytest.raises(DpsError) as raised:
        parse_host_name(name)
    assert raised.value.error_code == INVALID_ID


def test_credentials_are_masked_and_the_rest_shown() -> None:
    connection = {
        "sharedAccessKey": "a2V5", "connectionString": "HostName=h;SharedAccessKey=k", "password": "p",
        "clientSecret": "s", "sasToken": "t", "policyName": "iothubowner", "port": 8883,
    }  # fmt: skip
    assert mask_connection(connection) == {
        "sharedAccessKey": "***", "connectionString": "***", "password": "***",
        "clientSecret": "***", "sasToken": "***", "policyName": "iothubowner", "port": "8883",
    }  # fmt: skip
