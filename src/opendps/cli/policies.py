"""`opendps policy create|list|show|regenerate-key|delete`: shared access policies."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

import typer

from opendps.admin_api.schemas import KeyRegeneration, PolicyCreate
from opendps.cli.client import request_body
from opendps.cli.options import Invocation, operator_command
from opendps.cli.output import details, field, table
from opendps.model.instance import RIGHT_NAMES

app = typer.Typer(
    help="Shared access policies of an instance: keys and rights.", no_args_is_help=True
)

_COLUMNS = [("Name", field("name")), ("Rights", field("rights"))]
_ROWS = [
    *_COLUMNS,
    ("Primary key", field("primaryKey")),
    ("Secondary key", field("secondaryKey")),
    ("Primary connection string", field("primaryConnectionString")),
    ("Secondary connection string", field("secondaryConnectionString")),
]

NameArgument = Annotated[str, typer.Argument(help="Policy name.")]


def _policy_path(invocation: Invocation, name: str) -> str:
    return invocation.client.instance_path() + "/policies/" + quote(name, safe="")


@operator_command(app, "create")
def create(
    invocation: Invocation,
    name: NameArgument,
    rights: Annotated[
        str,
        typer.Option(help=f"Comma-separated rights: {', '.join(RIGHT_NAMES.values())}."),
    ],
    primary_key: Annotated[
        str | None, typer.Option(help="Base64 key (default: generated).", show_default=False)
    ] = None,
    secondary_key: Annotated[
        str | None, typer.Option(help="Base64 key (default: generated).", show_default=False)
    ] = None,
) -> None:
    """Create an access policy; prints its keys and connection strings."""
    names = [right.strip() for right in rights.split(",") if right.strip()]
    body = request_body(
        PolicyCreate, name=name, rights=names, primary_key=primary_key, secondary_key=secondary_key
    )
    policy = invocation.client.admin(
        "POST", invocation.client.instance_path() + "/policies", body=body
    )
    invocation.emit(policy, lambda item: details(item, _ROWS))


@operator_command(app, "list")
def list_policies(invocation: Invocation) -> None:
    """List the access policies and their rights (no keys)."""
    answer = invocation.client.admin("GET", invocation.client.instance_path() + "/policies")
    invocation.emit(
        answer["value"], lambda items: table(items, _COLUMNS, empty="No access policies.")
    )


@operator_command(app, "show")
def show(invocation: Invocation, name: NameArgument) -> None:
    """Show a policy with its keys and connection strings."""
    policy = invocation.client.admin("GET", _policy_path(invocation, name))
    invocation.emit(policy, lambda item: details(item, _ROWS))


@operator_command(app, "regenerate-key")
def regenerate_key(
    invocation: Invocation,
    name: NameArgument,
    key: Annotated[Literal["primary", "secondary"], typer.Option(help="Which key to replace.")],
) -> None:
    """Replace the primary or secondary key with a new random one."""
    body = request_body(KeyRegeneration, key=key)
    policy = invocation.client.admin(
        "POST", _policy_path(invocation, name) + "/regenerate-key", body=body
    )
    invocation.emit(policy, lambda item: details(item, _ROWS))


@operator_command(app, "delete")
def delete(invocation: Invocation, name: NameArgument) -> None:
    """Delete a policy (the last one with ServiceConfig cannot be deleted)."""
    invocation.client.admin("DELETE", _policy_path(invocation, name))
    invocation.done(f"Deleted access policy {name}.")
