"""`opendps allocation-policy set|show`: the instance-level allocation policy."""

from __future__ import annotations

from typing import Annotated

import typer

from opendps.admin_api.schemas import AllocationPolicySettings
from opendps.cli.client import request_body
from opendps.cli.options import Invocation, operator_command
from opendps.cli.output import details, field
from opendps.cli.warnings import warn_from_body
from opendps.model.hub import AllocationPolicy

app = typer.Typer(
    help="The instance allocation policy (enrollments may override it).", no_args_is_help=True
)

_ROWS = [
    ("Allocation policy", field("allocationPolicy")),
    ("Webhook URL", field("customAllocationDefinition.webhookUrl")),
    ("Webhook API version", field("customAllocationDefinition.apiVersion")),
]


@operator_command(app, "set")
def set_policy(
    invocation: Invocation,
    policy: Annotated[
        AllocationPolicy, typer.Argument(help="hashed, geoLatency, static or custom.")
    ],
    webhook_url: Annotated[
        str | None, typer.Option(help="custom: the webhook URL.", show_default=False)
    ] = None,
    webhook_api_version: Annotated[
        str | None,
        typer.Option(help="custom: the api-version the webhook expects.", show_default=False),
    ] = None,
    etag: Annotated[
        str | None,
        typer.Option(help="Only if the instance's etag is still this.", show_default=False),
    ] = None,
) -> None:
    """Set the allocation policy of the instance."""
    custom = None
    if webhook_url is not None or webhook_api_version is not None:
        custom = {"webhookUrl": webhook_url, "apiVersion": webhook_api_version}
    body = request_body(
        AllocationPolicySettings, allocation_policy=policy, custom_allocation_definition=custom
    )
    path = invocation.client.instance_path() + "/allocation-policy"
    answer = warn_from_body(invocation.client.admin("PUT", path, body=body, if_match=etag))
    invocation.emit(answer, lambda item: details(item, _ROWS))


@operator_command(app, "show")
def show(invocation: Invocation) -> None:
    """Show the allocation policy of the instance."""
    answer = invocation.client.admin(
        "GET", invocation.client.instance_path() + "/allocation-policy"
    )
    invocation.emit(answer, lambda item: details(item, _ROWS))
