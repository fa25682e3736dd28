"""`opendps allocation explain`: the allocation a registration would meet, as a dry run.

Calls `POST /admin/v1/instances/{instance}/allocation/explain` (admin_api/explain.py); nothing
is registered. A custom allocation webhook is called, marked with `x-opendps-dry-run: true`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.text import Text

from opendps.admin_api.schemas import ExplainRequest
from opendps.cli.client import CliError, request_body
from opendps.cli.options import Invocation, operator_command
from opendps.cli.output import details, field, table

app = typer.Typer(help="See allocation decisions before a device arrives.", no_args_is_help=True)

_DECISION_ROWS = [
    ("Enrollment", lambda d: f"{d.get('enrollmentKind')} {d.get('enrollmentId')}"),
    ("Attestation", field("attestationType")),
    ("Provisioning status", field("provisioningStatus")),
    ("Matched by", field("matchedBy")),
    (
        "Allocation policy",
        lambda d: f"{d.get('allocationPolicy')} (from the {d.get('policySource')})",
    ),
    ("Outcome", field("outcome")),
    ("Assigned hub", field("assignedHub")),
    ("Device ID", field("deviceId")),
    ("Why", field("reason")),
    ("Substatus", field("reprovisioning.substatus")),
    ("Twin", field("reprovisioning.twin")),
    ("Removes from hub", field("reprovisioning.removesFromHub")),
    ("Initial twin", field("initialTwin")),
    ("Webhook chose", field("webhook.iotHubHostName")),
    ("Webhook payload", field("webhook.payload")),
    ("Webhook error", field("webhook.errorMessage")),
    ("Error code", field("errorCode")),
]
_HUB_COLUMNS = [
    ("Hub", field("hostName")),
    ("Weight", field("allocationWeight")),
    ("Applies allocation policy", field("applyAllocationPolicy")),
    ("Location", field("location")),
    ("Candidate", field("candidate")),
]
_PREVIOUS_ROWS = [
    ("Status", field("status")),
    ("Assigned hub", field("assignedHub")),
    ("Device ID", field("deviceId")),
    ("Enrollment group", field("enrollmentGroupId")),
    ("Substatus", field("substatus")),
]


@operator_command(app, "explain")
def explain(
    invocation: Invocation,
    registration_id: Annotated[str, typer.Option(help="The device's registration ID.")],
    payload: Annotated[
        str | None,
        typer.Option(
            help="JSON payload the device would send (custom allocation).", show_default=False
        ),
    ] = None,
) -> None:
    """Explain which enrollment, policy and hub a registration would get (registers nothing)."""
    body = request_body(ExplainRequest, registration_id=registration_id)
    if payload is not None:
        try:
            body["payload"] = json.loads(payload)
        except ValueError as err:
            raise CliError(f"--payload is not JSON: {err}") from None
    path = invocation.client.instance_path() + "/allocation/explain"
    answer = invocation.client.admin("POST", path, body=body)
    invocation.emit(answer, render_explanation)


def render_explanation(answer: dict[str, Any]) -> RenderableType:
    parts: list[RenderableType] = [
        Text(f"Dry run for {answer['registrationId']}: nothing was registered.", style="bold"),
        Text(str(answer["summary"])),
    ]
    previous = answer.get("previousRegistration")
    if previous:
        parts += [Text("\nPrevious registration", style="bold"), details(previous, _PREVIOUS_ROWS)]
    for decision in answer["decisions"]:
        parts += [
            Text(""),
            details(decision, _DECISION_ROWS),
            table(decision["hubs"], _HUB_COLUMNS, empty="No linked hubs."),
        ]
    return Group(*parts)
