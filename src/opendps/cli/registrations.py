"""`opendps registration list|show|delete`: registration states (written by the service only)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from opendps.cli import enrollment_options as opt
from opendps.cli.options import Invocation, operator_command
from opendps.cli.output import details, field, table

app = typer.Typer(
    help="Registration states: what each device was provisioned with.", no_args_is_help=True
)

_COLUMNS = [
    ("Registration ID", field("registrationId")),
    ("Status", field("status")),
    ("Substatus", field("substatus")),
    ("Assigned hub", field("assignedHub")),
    ("Device ID", field("deviceId")),
]
_ROWS = [
    *_COLUMNS,
    ("Error code", field("errorCode")),
    ("Error message", field("errorMessage")),
    ("Payload", field("payload")),
    ("ETag", field("etag")),
    ("Created", field("createdDateTimeUtc")),
    ("Updated", field("lastUpdatedDateTimeUtc")),
]

RegistrationId = Annotated[str, typer.Argument(help="Registration ID of the device.")]


def _path(registration_id: str) -> str:
    return "/registrations/" + quote(registration_id, safe="")


@operator_command(app, "list")
def list_registrations(
    invocation: Invocation,
    group: Annotated[str, typer.Option(help="Enrollment group whose devices to list.")],
    top: opt.Top = None,
) -> None:
    """List the registration states of an enrollment group's devices."""
    items = opt.query_all(invocation.client, _path(group) + "/query", top=top)
    invocation.emit(items, lambda rows: table(rows, _COLUMNS, empty="No registrations."))


@operator_command(app, "show")
def show(invocation: Invocation, registration_id: RegistrationId) -> None:
    """Show a device's registration state."""
    state: Any = invocation.client.service("GET", _path(registration_id)).body
    invocation.emit(state, lambda item: details(item, _ROWS))


@operator_command(app, "delete")
def delete(invocation: Invocation, registration_id: RegistrationId, etag: opt.Etag = None) -> None:
    """Delete a registration state: the device registers afresh next time."""
    headers = {"If-Match": etag} if etag else None
    invocation.client.service("DELETE", _path(registration_id), headers=headers)
    invocation.done(f"Deleted registration {registration_id}.")
