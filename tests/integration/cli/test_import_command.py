"""`opendps enrollment import FILE`: CSV or JSON lines, streamed, errors by line of the file."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.cli.conftest import Cli
from tests.tpm_keys import EK_A

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def test_json_lines_file_of_5000_enrollments_is_imported(cli: Cli, tmp_path: Path) -> None:
    file = tmp_path / "devices.jsonl"
    with file.open("w") as out:
        for number in range(5000):
            enrollment = {
                "registrationId": f"device-{number:05d}",
                "attestation": {"type": "symmetricKey"},
            }
            out.write(json.dumps(enrollment) + "\n")
    result = cli.json("enrollment", "import", str(file))
    assert result == {"imported": 5000, "failed": 0, "errors": [], "errorsTruncated": False}
    assert cli.json("instance", "show")["counts"]["individualEnrollments"] == 5000
    assert len(cli.json("enrollment", "list", "--top", "150")) == 150


def test_csv_rows_become_enrollments_and_bad_rows_are_named_by_file_line(
    cli: Cli, tmp_path: Path
) -> None:
    file = tmp_path / "devices.csv"
    file.write_text(
        "registrationId,deviceId,primaryKey,secondaryKey,iotEdge,initialTwin,provisioningStatus\n"
        f"csv-1,device-one,{KEY},{KEY},true,,\n"
        'csv-2,,,,no,"{""tags"": {\n""line"": 2}}",disabled\n'  # a quoted field over two lines
        "bad id!,,,,,,\n"
        "\n"
        "csv-3,,,,maybe,,\n"
    )
    result = cli.run("enrollment", "import", str(file), "--json")
    assert result.exit_code == 1  # some rows failed
    body = json.loads(result.stdout)
    assert (body["imported"], body["failed"]) == (2, 2)
    assert [(e["line"], e["registrationId"]) for e in body["errors"]] == [
        (5, "bad id!"),
        (7, "csv-3"),
    ]
    assert "iotEdge" in body["errors"][1]["message"]
    first = cli.json("enrollment", "show", "csv-1", "--show-keys")
    assert (first["deviceId"], first["capabilities"]["iotEdge"]) == ("device-one", True)
    assert first["attestation"]["symmetricKey"]["primaryKey"] == KEY
    second = cli.json("enrollment", "show", "csv-2")
    assert (second["provisioningStatus"], second["initialTwin"]["tags"]) == (
        "disabled",
        {"line": 2},
    )


def test_human_output_summarises_and_lists_failures(cli: Cli, tmp_path: Path) -> None:
    file = tmp_path / "devices.ndjson"
    file.write_text(
        '{"registrationId": "ok-1", "attestation": {"type": "symmetricKey"}}\n{"broken": \n'
    )
    result = cli.run("enrollment", "import", str(file))
    assert result.exit_code == 1
    assert "Imported 1 enrollment(s); 1 failed." in result.stdout
    assert "not valid JSON" in result.stdout


def test_unknown_csv_column_stops_before_anything_is_sent(cli: Cli, tmp_path: Path) -> None:
    file = tmp_path / "devices.csv"
    file.write_text("registrationId,colour\nx,red\n")
    assert "unknown CSV column(s) colour" in cli.fails("enrollment", "import", str(file))
    assert cli.json("instance", "show")["counts"]["individualEnrollments"] == 0


def test_json_array_file_is_sent_as_it_is_and_errors_name_elements(
    cli: Cli, tmp_path: Path
) -> None:
    file = tmp_path / "devices.json"
    enrollments = [
        {"registrationId": "array-1", "attestation": {"type": "symmetricKey"}},
        {"registrationId": "bad id", "attestation": {"type": "symmetricKey"}},
        {
            "registrationId": "array-3",
            "attestation": {"type": "tpm", "tpm": {"endorsementKey": EK_A}},
        },
    ]
    file.write_text(json.dumps(enrollments, indent=2))
    result = cli.run("enrollment", "import", str(file), "--json")
    body = json.loads(result.stdout)
    assert (result.exit_code, body["imported"], body["failed"]) == (1, 2, 1)
    assert [(e["line"], e["registrationId"]) for e in body["errors"]] == [(2, "bad id")]
    assert cli.json("enrollment", "show", "array-3")["attestation"]["type"] == "tpm"
