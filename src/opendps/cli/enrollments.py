"""`opendps enrollment create|list|show|update|delete|import`: individual enrollments.

Everything but `import` goes through the DPS service API (`/enrollments/...?api-version=
2021-10-01`, signed with a service SAS token), the surface the Azure SDKs use. `import` streams
a file of any size to the admin API's import route, which has no 10-item bulk limit.
"""

from __future__ import annotations

import array
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Group, RenderableType
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from opendps.attestation.tpm import default_registration_id, parse_tpm_public_base64
from opendps.cli import enrollment_options as opt
from opendps.cli.client import CliError
from opendps.cli.enrollment_rows import (
    EnrollmentLine,
    detect_format,
    read_csv,
    read_json_lines,
    text_stream,
)
from opendps.cli.options import EXIT_FAILURE, Invocation, operator_command
from opendps.cli.output import details, field, table
from opendps.cli.warnings import warn_from_response
from opendps.model.errors import DpsError

app = typer.Typer(help="Individual enrollments (one device each).", no_args_is_help=True)

# Bytes sent per chunk of an import upload: big enough to keep the connection busy, small
# enough that the progress bar moves.
IMPORT_CHUNK_BYTES = 256 * 1024
NDJSON_CONTENT_TYPE = "application/x-ndjson"
JSON_CONTENT_TYPE = "application/json"

_COLUMNS = [
    ("Registration ID", field("registrationId")),
    ("Device ID", field("deviceId")),
    ("Attestation", opt.attestation_summary),
    ("Status", field("provisioningStatus")),
    ("IoT hubs", field("iotHubs")),
]
_ROWS = opt.enrollment_rows("Registration ID", "registrationId")

RegistrationId = Annotated[str, typer.Argument(help="Registration ID of the device.")]
NewRegistrationId = Annotated[
    str | None,
    typer.Argument(
        help="Registration ID of the device. Optional with --endorsement-key: the default is "
        "the one TPM clients compute from the endorsement key (base32 of its SHA-256).",
        show_default=False,
    ),
]
DeviceId = Annotated[
    str | None,
    typer.Option(help="Device ID on the hub (default: the registration ID).", show_default=False),
]


def _path(registration_id: str) -> str:
    return "/enrollments/" + quote(registration_id, safe="")


def _show(invocation: Invocation, enrollment: Any) -> None:
    invocation.emit(enrollment, lambda item: details(item, _ROWS))


@operator_command(app, "create")
def create(
    invocation: Invocation,
    registration_id: NewRegistrationId = None,
    device_id: DeviceId = None,
    primary_key: opt.PrimaryKey = None,
    secondary_key: opt.SecondaryKey = None,
    certificate: opt.Certificate = None,
    secondary_certificate: opt.SecondaryCertificate = None,
    endorsement_key: opt.EndorsementKey = None,
    initial_twin: opt.InitialTwin = None,
    iot_edge: opt.IotEdgeFlag = False,
    iot_hubs: opt.IotHubs = None,
    allocation_policy: opt.Allocation = None,
    reprovision_policy: opt.Reprovision = None,
    webhook_url: opt.WebhookUrl = None,
    webhook_api_version: opt.WebhookApiVersion = None,
    disabled: opt.DisabledFlag = False,
) -> None:
    """Create (or replace) an enrollment: symmetric key by default, --certificate for X.509,
    --endorsement-key for TPM. Prints it with its keys."""
    device = registration_id or _tpm_registration_id(endorsement_key)
    attestation = opt.AttestationOptions(
        primary_key, secondary_key, certificate, secondary_certificate, endorsement_key
    ).mechanism("individual")
    body: dict[str, Any] = {
        "registrationId": device,
        "attestation": attestation or {"type": "symmetricKey", "symmetricKey": {}},
    }
    if device_id is not None:
        body["deviceId"] = device_id
    opt.ProvisioningOptions(
        initial_twin,
        iot_edge,
        iot_hubs,
        allocation_policy,
        reprovision_policy,
        webhook_url,
        webhook_api_version,
        disabled,
    ).apply(body)
    answer = invocation.client.service("PUT", _path(device), body=body)
    _show(invocation, warn_from_response(answer))


def _tpm_registration_id(endorsement_key: str | None) -> str:
    """The registration ID a TPM device uses by default (Node and C SDKs: protocol.md §6.1)."""
    if endorsement_key is None:
        raise typer.BadParameter(
            "is required (it may be left out only with --endorsement-key)",
            param_hint="REGISTRATION_ID",
        )
    try:
        key = parse_tpm_public_base64(endorsement_key, "--endorsement-key")
    except DpsError as err:
        raise typer.BadParameter(err.message, param_hint="--endorsement-key") from None
    return default_registration_id(key.raw)


@operator_command(app, "list")
def list_enrollments(invocation: Invocation, top: opt.Top = None) -> None:
    """List the individual enrollments (keys left out)."""
    items = opt.query_all(invocation.client, "/enrollments/query", top=top, body={"query": "*"})
    invocation.emit(items, lambda rows: table(rows, _COLUMNS, empty="No individual enrollments."))


@operator_command(app, "show")
def show(
    invocation: Invocation, registration_id: RegistrationId, show_keys: opt.ShowKeys = False
) -> None:
    """Show an enrollment and its registration state."""
    enrollment = invocation.client.service("GET", _path(registration_id)).body
    if show_keys:
        mechanism = invocation.client.service(
            "POST", _path(registration_id) + "/attestationmechanism"
        )
        enrollment["attestation"] = mechanism.body
    _show(invocation, enrollment)


@operator_command(app, "update")
def update(
    invocation: Invocation,
    registration_id: RegistrationId,
    device_id: DeviceId = None,
    primary_key: opt.PrimaryKey = None,
    secondary_key: opt.SecondaryKey = None,
    certificate: opt.Certificate = None,
    secondary_certificate: opt.SecondaryCertificate = None,
    endorsement_key: opt.EndorsementKey = None,
    initial_twin: opt.InitialTwin = None,
    iot_edge: opt.IotEdgeSwitch = None,
    iot_hubs: opt.IotHubs = None,
    allocation_policy: opt.Allocation = None,
    reprovision_policy: opt.Reprovision = None,
    webhook_url: opt.WebhookUrl = None,
    webhook_api_version: opt.WebhookApiVersion = None,
    disabled: opt.DisabledSwitch = None,
    etag: opt.Etag = None,
) -> None:
    """Change some settings of an enrollment; the others stay (keys included)."""
    current = invocation.client.service("GET", _path(registration_id)).body
    attestation = opt.AttestationOptions(
        primary_key, secondary_key, certificate, secondary_certificate, endorsement_key
    ).mechanism("individual")
    if attestation is not None:
        current["attestation"] = attestation
    if device_id is not None:
        current["deviceId"] = device_id
    opt.ProvisioningOptions(
        initial_twin,
        iot_edge,
        iot_hubs,
        allocation_policy,
        reprovision_policy,
        webhook_url,
        webhook_api_version,
        disabled,
    ).apply(current)
    headers = {"If-Match": etag or current.get("etag") or "*"}
    _show(
        invocation,
        invocation.client.service(
            "PUT", _path(registration_id), body=current, headers=headers
        ).body,
    )


@operator_command(app, "delete")
def delete(invocation: Invocation, registration_id: RegistrationId, etag: opt.Etag = None) -> None:
    """Delete an enrollment (its registration state stays until deleted too)."""
    headers = {"If-Match": etag} if etag else None
    invocation.client.service("DELETE", _path(registration_id), headers=headers)
    invocation.done(f"Deleted enrollment {registration_id}.")


@operator_command(app, "import")
def import_file(
    invocation: Invocation,
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV, JSON lines (one enrollment per line) or a JSON array.",
            exists=True,
            dir_okay=False,
        ),
    ],
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="csv, jsonl or json (default: by extension and content).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Import individual enrollments from a file of any size, streamed; existing ones are replaced."""
    source_lines = array.array("L")  # server item k came from file line source_lines[k - 1]
    path = invocation.client.instance_path() + "/enrollments/import"
    with file.open("rb") as binary, _progress(invocation, file.stat().st_size) as report:
        chosen = file_format or detect_format(file.name, binary.peek(64))
        if chosen == "json":
            # An array goes as it is; the server numbers its elements, which is what we show.
            chunks = _raw_chunks(binary, report)
            result = invocation.client.admin_stream(path, chunks, JSON_CONTENT_TYPE)
        elif chosen in ("csv", "jsonl"):
            # Held here: a text wrapper closes its binary file when it is collected.
            text = text_stream(binary)
            lines = read_csv(text) if chosen == "csv" else read_json_lines(text)
            chunks = _ndjson_chunks(lines, source_lines, binary, report)
            result = invocation.client.admin_stream(path, chunks, NDJSON_CONTENT_TYPE)
        else:
            raise CliError("--format must be csv, jsonl or json")
    for error in result["errors"]:
        if 0 < error["line"] <= len(source_lines):
            error["line"] = source_lines[error["line"] - 1]
    invocation.emit(result, _render_import)
    if result["failed"]:
        raise typer.Exit(EXIT_FAILURE)


@contextlib.contextmanager
def _progress(invocation: Invocation, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar over the file's bytes (off with --json); yields `report(position)`."""
    with Progress(
        TextColumn("importing"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=invocation.console, disable=invocation.json_output, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("import", total=total)
        yield lambda position: progress.update(task, completed=position)


def _raw_chunks(binary: IO[bytes], report: Callable[[int], None]) -> Iterator[bytes]:
    while chunk := binary.read(IMPORT_CHUNK_BYTES):
        yield chunk
        report(binary.tell())


def _ndjson_chunks(
    lines: Iterator[EnrollmentLine],
    source_lines: array.array[int],
    binary: IO[bytes],
    report: Callable[[int], None],
) -> Iterator[bytes]:
    buffer: list[bytes] = []
    size = 0
    for line in lines:
        source_lines.append(line.source_line)
        data = line.json_text.encode("utf-8") + b"\n"
        buffer.append(data)
        size += len(data)
        if size >= IMPORT_CHUNK_BYTES:
            yield b"".join(buffer)
            buffer, size = [], 0
            report(binary.tell())
    if buffer:
        yield b"".join(buffer)
    report(binary.tell())


def _render_import(result: dict[str, Any]) -> RenderableType:
    summary = f"Imported {result['imported']} enrollment(s); {result['failed']} failed."
    if not result["errors"]:
        return summary
    errors = table(
        result["errors"],
        [("Line", field("line")), ("Registration ID", field("registrationId")),
         ("Error", field("errorCode")), ("Message", field("message"))],
        empty="",
    )  # fmt: skip
    more = " (only the first ones are listed)" if result.get("errorsTruncated") else ""
    return Group(summary + more, errors)
