"""`opendps instance create|list|show|delete`: instances (tenants) of the deployment."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Group, RenderableType

from opendps.admin_api.schemas import InstanceCreate
from opendps.cli.client import request_body
from opendps.cli.options import Invocation, operator_command
from opendps.cli.output import details, field, table
from opendps.model.hub import AllocationPolicy

app = typer.Typer(
    help="Instances (tenants): each has its own ID scope, enrollments, hubs and keys.",
    no_args_is_help=True,
)

_SUMMARY_COLUMNS = [
    ("Name", field("name")),
    ("ID scope", field("idScope")),
    ("Service host name", field("serviceHostName")),
    ("Allocation policy", field("allocationPolicy")),
]
_DETAIL_ROWS = [
    *_SUMMARY_COLUMNS,
    ("Custom allocation webhook", field("customAllocationDefinition.webhookUrl")),
    ("Created", field("createdDateTimeUtc")),
    ("Individual enrollments", field("counts.individualEnrollments")),
    ("Enrollment groups", field("counts.enrollmentGroups")),
    ("CA certificates", field("counts.caCertificates")),
    ("Access policies", field("counts.accessPolicies")),
    ("Linked hubs", lambda item: [hub["hostName"] for hub in item.get("hubs", [])]),
]

NameArgument = Annotated[
    str | None,
    typer.Argument(
        help="Instance name (default: --instance, else the default instance).", show_default=False
    ),
]


def _path(invocation: Invocation, name: str | None) -> str:
    return "/instances/" + quote(name, safe="") if name else invocation.client.instance_path()


@operator_command(app, "create")
def create(
    invocation: Invocation,
    name: Annotated[str, typer.Argument(help="Name of the new instance.")],
    service_host_name: Annotated[
        str | None,
        typer.Option(
            help="Host name that selects it on the service API (default: NAME.<server host>).",
            show_default=False,
        ),
    ] = None,
    allocation_policy: Annotated[
        AllocationPolicy, typer.Option(help="Instance allocation policy.")
    ] = AllocationPolicy.HASHED,
) -> None:
    """Create an instance with a new ID scope, owner policy and built-in hub (admin key)."""
    body = request_body(
        InstanceCreate,
        name=name,
        service_host_name=service_host_name,
        allocation_policy=allocation_policy,
    )
    created = invocation.client.admin("POST", "/instances", body=body)
    invocation.emit(created, _render_created)


def _render_created(item: dict[str, Any]) -> RenderableType:
    owner = item["ownerPolicy"]
    return Group(
        details(item, _DETAIL_ROWS),
        details(owner, [("Service connection string", field("primaryConnectionString"))]),
    )


@operator_command(app, "list")
def list_instances(invocation: Invocation) -> None:
    """List the instances (a connection string sees only its own)."""
    answer = invocation.client.admin("GET", "/instances")
    invocation.emit(
        answer["value"], lambda items: table(items, _SUMMARY_COLUMNS, empty="No instances.")
    )


@operator_command(app, "show")
def show(invocation: Invocation, name: NameArgument = None) -> None:
    """Show an instance: ID scope, service host name, allocation policy, hubs and counts."""
    answer = invocation.client.admin("GET", _path(invocation, name))
    invocation.emit(answer, lambda item: details(item, _DETAIL_ROWS))


@operator_command(app, "delete")
def delete(
    invocation: Invocation, name: Annotated[str, typer.Argument(help="Instance to delete.")]
) -> None:
    """Delete an instance and everything it owns (admin key; not the default instance)."""
    invocation.client.admin("DELETE", "/instances/" + quote(name, safe=""))
    invocation.done(f"Deleted instance {name}.")
