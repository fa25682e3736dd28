"""Connection resolution of the CLI: connection strings, endpoints, the local data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opendps.admin_api.schemas import HubCreate
from opendps.attestation.sas import parse_sas_token, verify_signature
from opendps.cli.client import (
    CliError,
    ConnectionOptions,
    Endpoint,
    PolicyCredential,
    open_client,
    parse_connection_string,
    request_body,
)

KEY = "ERERERERERERERERERERERERERERERERERERERERERE="
CONNECTION = (
    f"HostName=localhost:8443;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={KEY}"
)


def test_connection_string_is_parsed_in_any_order() -> None:
    parsed = parse_connection_string(
        f"SharedAccessKey={KEY}; HostName=dps.example;SharedAccessKeyName=owner;"
    )
    assert parsed == PolicyCredential("dps.example", "owner", KEY)


def test_incomplete_connection_string_names_what_is_missing_without_the_key() -> None:
    with pytest.raises(CliError) as raised:
        parse_connection_string(f"HostName=dps.example;SharedAccessKey={KEY}")
    assert "SharedAccessKeyName" in str(raised.value) and KEY not in str(raised.value)


def test_policy_token_signs_the_host_with_the_key() -> None:
    token = parse_sas_token(PolicyCredential("dps.example:8443", "owner", KEY).token(1_700_000_000))
    assert (token.resource, token.key_name, token.expiry) == (
        "dps.example:8443",
        "owner",
        1_700_003_600,
    )
    assert verify_signature(token, KEY)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://localhost:8443", Endpoint("https", "localhost", 8443)),
        ("localhost", Endpoint("https", "localhost", 443)),
        ("http://127.0.0.1:9000/", Endpoint("http", "127.0.0.1", 9000)),
        ("https://[::1]:8443", Endpoint("https", "::1", 8443)),
    ],
)
def test_endpoints_are_parsed(url: str, expected: Endpoint) -> None:
    assert Endpoint.parse(url) == expected


@pytest.mark.parametrize("url", ["ftp://host", "https://", "https://host:notaport"])
def test_bad_endpoints_are_refused(url: str) -> None:
    with pytest.raises(CliError):
        Endpoint.parse(url)


def _data_dir(tmp_path: Path) -> Path:
    (tmp_path / "admin.key").write_text("YWRtaW4ta2V5\n")
    state = {
        "idScope": "0ne00000ABC",
        "serviceConnectionString": CONNECTION,
        "caCertificate": str(tmp_path / "none.pem"),
        "endpoints": {
            "https": "https://localhost:8443",
            "mqtt": "mqtts://localhost:8883",
            "amqp": "amqps://localhost:5671",
        },
        "dataDir": str(tmp_path),
        "database": "sqlite:///x.db",
        "pid": 1,
        "adminKeyFile": str(tmp_path / "admin.key"),
    }
    (tmp_path / "state.json").write_text(json.dumps(state))
    return tmp_path


def test_missing_state_json_tells_how_to_connect(tmp_path: Path) -> None:
    with pytest.raises(CliError) as raised:
        open_client(ConnectionOptions(data_dir=tmp_path))
    assert "opendps serve" in str(raised.value) and "--connection-string" in str(raised.value)


def test_unreadable_ca_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CliError) as raised:
        open_client(ConnectionOptions(data_dir=_data_dir(tmp_path)))
    assert "none.pem" in str(raised.value)


def test_connection_string_needs_no_data_dir_and_excludes_instance(tmp_path: Path) -> None:
    client = open_client(
        ConnectionOptions(connection_string=CONNECTION, data_dir=tmp_path / "absent")
    )
    assert client.endpoint == Endpoint("https", "localhost", 8443)  # from the HostName
    with pytest.raises(CliError) as raised:
        open_client(
            ConnectionOptions(connection_string=CONNECTION, instance="other", data_dir=tmp_path)
        )
    assert "--instance" in str(raised.value)


def test_request_body_uses_wire_names_and_reports_problems_by_them() -> None:
    assert request_body(HubCreate, host_name="hub.example", allocation_weight=None) == {
        "hostName": "hub.example"
    }
    with pytest.raises(CliError) as raised:
        request_body(HubCreate, host_name="hub.example", allocation_weight=0)
    assert "allocationWeight" in str(raised.value)
