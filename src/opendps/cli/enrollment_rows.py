"""Enrollment files for `opendps enrollment import`: CSV, JSON lines or a JSON array, streamed.

JSON lines are passed through untouched (one DPS individual enrollment per line), and so is a
file holding one JSON array of enrollments (cli/enrollments.py streams it as it is). A CSV file
has a header row naming some of `CSV_COLUMNS`; each row becomes one enrollment in the DPS
2021-10-01 shape. Values are carried over without judging them: the server validates every
enrollment with the service API's rules and reports bad ones by line, so there is one set of
rules, not two.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from opendps.cli.client import CliError

# Column → meaning; `registrationId` is required, the rest optional (docs/cli.md).
CSV_COLUMNS = (
    "registrationId",
    "deviceId",
    "attestationType",  # symmetricKey (default), x509 or tpm
    "primaryKey",
    "secondaryKey",
    "certificate",  # X.509: PEM text or base64 DER of the device certificate
    "secondaryCertificate",
    "endorsementKey",  # TPM
    "iotHubs",  # host names separated by ';' or ','
    "allocationPolicy",
    "provisioningStatus",  # enabled (default) or disabled
    "iotEdge",  # true or false
    "initialTwin",  # JSON text: {"tags": {...}, "properties": {"desired": {...}}}
    "reprovisionPolicy",  # reprovisionandmigratedata, reprovisionandresetdata or never
    "webhookUrl",
    "webhookApiVersion",
)
# Azure CLI's names for the three reprovision policies (az iot dps enrollment create).
REPROVISION_POLICIES: dict[str, dict[str, bool]] = {
    "reprovisionandmigratedata": {"updateHubAssignment": True, "migrateDeviceData": True},
    "reprovisionandresetdata": {"updateHubAssignment": True, "migrateDeviceData": False},
    "never": {"updateHubAssignment": False, "migrateDeviceData": False},
}
_HUB_SEPARATORS = re.compile(r"[;,]")


@dataclass(frozen=True, slots=True)
class EnrollmentLine:
    """One enrollment to send: its JSON text and the line of the file it starts on."""

    source_line: int
    json_text: str


def read_json_lines(stream: IO[str]) -> Iterator[EnrollmentLine]:
    """Every line as it is (blank lines too, so the server's line numbers are the file's)."""
    for number, line in enumerate(stream, start=1):
        yield EnrollmentLine(number, line.rstrip("\r\n"))


def read_csv(stream: IO[str]) -> Iterator[EnrollmentLine]:
    """One enrollment per CSV record; raises CliError for an unusable header."""
    # `line_num` counts physical lines: a quoted field may span several.
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        return
    columns = _check_header(header)
    start = reader.line_num + 1
    for record in reader:
        if any(value.strip() for value in record):
            row = dict(zip(columns, record, strict=False))
            yield EnrollmentLine(start, json.dumps(csv_row_to_enrollment(row), ensure_ascii=False))
        start = reader.line_num + 1


def _check_header(header: list[str]) -> list[str]:
    columns = [name.strip() for name in header]
    by_lower = {name.lower(): name for name in CSV_COLUMNS}
    unknown = [name for name in columns if name.lower() not in by_lower]
    if unknown:
        raise CliError(
            f"unknown CSV column(s) {', '.join(unknown)}; known: {', '.join(CSV_COLUMNS)}"
        )
    canonical = [by_lower[name.lower()] for name in columns]
    if "registrationId" not in canonical:
        raise CliError("the CSV header needs a registrationId column")
    return canonical


def csv_row_to_enrollment(row: dict[str, str]) -> dict[str, Any]:
    """The DPS individual enrollment a CSV row describes (empty cells are left out)."""
    values = {name: value.strip() for name, value in row.items() if value and value.strip()}
    enrollment: dict[str, Any] = {
        "registrationId": values.get("registrationId", ""),
        "attestation": _attestation(values),
    }
    if "deviceId" in values:
        enrollment["deviceId"] = values["deviceId"]
    if "iotHubs" in values:
        enrollment["iotHubs"] = [
            h.strip() for h in _HUB_SEPARATORS.split(values["iotHubs"]) if h.strip()
        ]
    for column in ("allocationPolicy", "provisioningStatus"):
        if column in values:
            enrollment[column] = values[column]
    if "iotEdge" in values:
        enrollment["capabilities"] = {"iotEdge": _boolean(values["iotEdge"])}
    if "initialTwin" in values:
        enrollment["initialTwin"] = _json(values["initialTwin"])
    if "reprovisionPolicy" in values:
        policy = values["reprovisionPolicy"]
        enrollment["reprovisionPolicy"] = REPROVISION_POLICIES.get(policy.lower(), policy)
    if "webhookUrl" in values or "webhookApiVersion" in values:
        enrollment["customAllocationDefinition"] = {
            "webhookUrl": values.get("webhookUrl"),
            "apiVersion": values.get("webhookApiVersion"),
        }
    return enrollment


def _attestation(values: dict[str, str]) -> dict[str, Any]:
    kind = values.get("attestationType") or _implied_attestation(values)
    if kind.lower() == "x509":
        certificates: dict[str, Any] = {"primary": {"certificate": values.get("certificate")}}
        if "secondaryCertificate" in values:
            certificates["secondary"] = {"certificate": values["secondaryCertificate"]}
        return {"type": "x509", "x509": {"clientCertificates": certificates}}
    if kind.lower() == "tpm":
        return {"type": "tpm", "tpm": {"endorsementKey": values.get("endorsementKey")}}
    keys = {name: values[name] for name in ("primaryKey", "secondaryKey") if name in values}
    # An unknown type goes to the server as written, which names the allowed ones.
    return {
        "type": kind if kind.lower() != "symmetrickey" else "symmetricKey",
        "symmetricKey": keys,
    }


def _implied_attestation(values: dict[str, str]) -> str:
    if "certificate" in values:
        return "x509"
    if "endorsementKey" in values:
        return "tpm"
    return "symmetricKey"


def _boolean(text: str) -> bool | str:
    lowered = text.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    return text  # the server refuses it with a message naming the field


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # the server refuses it with a message naming the field


def detect_format(path_name: str, first_bytes: bytes) -> str:
    """`csv`, `jsonl` or `json` (one array): `.csv` is CSV; a file starting with `[` is an
    array; `.jsonl`, `.ndjson`, `.json` or a first `{` are JSON lines; anything else is CSV."""
    start = first_bytes.lstrip().lstrip(b"\xef\xbb\xbf")[:1]
    lowered = path_name.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if start == b"[":
        return "json"
    if lowered.endswith((".jsonl", ".ndjson", ".json")) or start == b"{":
        return "jsonl"
    return "csv"


def text_stream(binary: IO[bytes]) -> IO[str]:
    """UTF-8 text over a binary file (a BOM from spreadsheet exports is dropped)."""
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
