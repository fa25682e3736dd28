"""Import files: CSV rows to DPS enrollments, JSON lines passed through, line numbers kept."""

from __future__ import annotations

import io

import pytest

from opendps.cli.client import CliError
from opendps.cli.enrollment_rows import (
    csv_row_to_enrollment,
    detect_format,
    read_csv,
    read_json_lines,
    text_stream,
)

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def test_symmetric_key_row_with_every_setting() -> None:
    row = {
        "registrationId": "dev-1", "deviceId": "device-one", "primaryKey": KEY, "secondaryKey": "",
        "iotHubs": "hub-a.example; hub-b.example,hub-c.example", "allocationPolicy": "static",
        "provisioningStatus": "disabled", "iotEdge": "TRUE", "initialTwin": '{"tags": {"a": 1}}',
        "reprovisionPolicy": "ReprovisionAndResetData", "webhookUrl": "https://w.example", "webhookApiVersion": "2021-10-01",
    }  # fmt: skip
    assert csv_row_to_enrollment(row) == {
        "registrationId": "dev-1",
        "deviceId": "device-one",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY}},
        "iotHubs": ["hub-a.example", "hub-b.example", "hub-c.example"],
        "allocationPolicy": "static",
        "provisioningStatus": "disabled",
        "capabilities": {"iotEdge": True},
        "initialTwin": {"tags": {"a": 1}},
        "reprovisionPolicy": {"updateHubAssignment": True, "migrateDeviceData": False},
        "customAllocationDefinition": {
            "webhookUrl": "https://w.example",
            "apiVersion": "2021-10-01",
        },
    }


def test_attestation_is_implied_by_the_columns_given() -> None:
    x509 = csv_row_to_enrollment(
        {"registrationId": "d", "certificate": "PEM", "secondaryCertificate": "PEM2"}
    )
    assert x509["attestation"] == {"type": "x509", "x509": {"clientCertificates": {
        "primary": {"certificate": "PEM"}, "secondary": {"certificate": "PEM2"}}}}  # fmt: skip
    tpm = csv_row_to_enrollment({"registrationId": "d", "endorsementKey": KEY})
    assert tpm["attestation"] == {"type": "tpm", "tpm": {"endorsementKey": KEY}}
    explicit = csv_row_to_enrollment({"registrationId": "d", "attestationType": "SymmetricKey"})
    assert explicit["attestation"] == {"type": "symmetricKey", "symmetricKey": {}}


def test_values_the_cli_cannot_judge_go_to_the_server_as_written() -> None:
    row = csv_row_to_enrollment({"registrationId": "d", "iotEdge": "maybe", "initialTwin": "{oops"})
    assert row["capabilities"] == {"iotEdge": "maybe"} and row["initialTwin"] == "{oops"


def test_csv_records_carry_the_line_they_start_on() -> None:
    text = 'registrationId,initialTwin\nd-1,\n"d-2","{""tags"":\n{}}"\n\nd-3,\n'
    lines = list(read_csv(io.StringIO(text)))
    assert [line.source_line for line in lines] == [2, 3, 6]
    assert '"tags": {}' in lines[1].json_text


def test_csv_header_must_name_known_columns_and_the_registration_id() -> None:
    with pytest.raises(CliError, match="colour"):
        list(read_csv(io.StringIO("registrationId,colour\n")))
    with pytest.raises(CliError, match="registrationId"):
        list(read_csv(io.StringIO("deviceId\nx\n")))
    assert list(read_csv(io.StringIO(""))) == []
    assert [line.source_line for line in read_csv(io.StringIO("REGISTRATIONID\nx\n"))] == [2]


def test_json_lines_pass_through_with_their_numbers() -> None:
    lines = list(read_json_lines(io.StringIO('{"a": 1}\r\n\n{"b": 2}')))
    assert [(line.source_line, line.json_text) for line in lines] == [
        (1, '{"a": 1}'),
        (2, ""),
        (3, '{"b": 2}'),
    ]


@pytest.mark.parametrize(
    ("name", "first", "expected"),
    [("x.csv", b"{", "csv"), ("x.jsonl", b"r", "jsonl"), ("x.ndjson", b"", "jsonl"),
     ("x.txt", b'  {"a"', "jsonl"), ("x.txt", b"registrationId", "csv"),
     ("x.json", b"\n [ {", "json"), ("x.jsonl", b"\xef\xbb\xbf[", "json"), ("x.json", b"{", "jsonl")],
)  # fmt: skip
def test_format_is_detected_by_extension_then_content(
    name: str, first: bytes, expected: str
) -> None:
    assert detect_format(name, first) == expected


def test_byte_order_mark_of_spreadsheet_exports_is_dropped() -> None:
    stream = text_stream(io.BytesIO("\ufeffregistrationId\nd-1\n".encode()))
    assert [line.source_line for line in read_csv(stream)] == [2]
