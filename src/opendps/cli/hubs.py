"""`opendps hub add|list|show|update|delete`: the hubs an instance assigns devices to."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer

from opendps.admin_api.schemas import HubCreate, HubUpdate
from opendps.cli.client import request_body
from opendps.cli.options import Invocation, operator_command
from opendps.cli.output import details, field, table

app = typer.Typer(
    help="Linked hubs of an instance (built-in hubs in this version).", no_args_is_help=True
)

_COLUMNS = [
    ("Host name", field("hostName")),
    ("Kind", field("kind")),
    ("Weight", field("allocationWeight")),
    ("Applies allocation policy", field("applyAllocationPolicy")),
    ("Location", field("location")),
]
_ROWS = [*_COLUMNS, ("Connection", field("connection")), ("ETag", field("etag"))]

HostArgument = Annotated[str, typer.Argument(help="Host name of the hub.")]
WeightOption = Annotated[
    int | None, typer.Option("--weight", help="Allocation weight (1 or more).", show_default=False)
]
LocationOption = Annotated[
    str | None, typer.Option(help="Location (for geoLatency).", show_default=False)
]


def _hub_path(invocation: Invocation, host: str) -> str:
    return invocation.client.instance_path() + "/hubs/" + quote(host, safe="")


@operator_command(app, "add")
def add(
    invocation: Invocation,
    host_name: HostArgument,
    weight: WeightOption = None,
    apply_allocation_policy: Annotated[
        bool, typer.Option(help="Whether the instance allocation policy applies to this hub.")
    ] = True,
    location: LocationOption = None,
) -> None:
    """Link a built-in hub to the instance (at most 50 hubs)."""
    body = request_body(
        HubCreate,
        host_name=host_name,
        allocation_weight=weight,
        apply_allocation_policy=apply_allocation_policy,
        location=location,
    )
    hub = invocation.client.admin("POST", invocation.client.instance_path() + "/hubs", body=body)
    invocation.emit(hub, lambda item: details(item, _ROWS))


@operator_command(app, "list")
def list_hubs(invocation: Invocation) -> None:
    """List the hubs linked to the instance."""
    answer = invocation.client.admin("GET", invocation.client.instance_path() + "/hubs")
    invocation.emit(answer["value"], lambda items: table(items, _COLUMNS, empty="No linked hubs."))


@operator_command(app, "show")
def show(invocation: Invocation, host_name: HostArgument) -> None:
    """Show a linked hub (credentials masked)."""
    hub = invocation.client.admin("GET", _hub_path(invocation, host_name))
    invocation.emit(hub, lambda item: details(item, _ROWS))


@operator_command(app, "update")
def update(
    invocation: Invocation,
    host_name: HostArgument,
    weight: WeightOption = None,
    apply_allocation_policy: Annotated[
        bool | None,
        typer.Option("--apply-allocation-policy/--no-apply-allocation-policy", show_default=False),
    ] = None,
    location: LocationOption = None,
    etag: Annotated[
        str | None, typer.Option(help="Only if the hub's etag is still this.", show_default=False)
    ] = None,
) -> None:
    """Change a hub's weight, allocation-policy flag or location."""
    body = request_body(
        HubUpdate,
        allocation_weight=weight,
        apply_allocation_policy=apply_allocation_policy,
        location=location,
    )
    hub = invocation.client.admin(
        "PATCH", _hub_path(invocation, host_name), body=body, if_match=etag
    )
    invocation.emit(hub, lambda item: details(item, _ROWS))


@operator_command(app, "delete")
def delete(invocation: Invocation, host_name: HostArgument) -> None:
    """Unlink a hub from the instance."""
    invocation.client.admin("DELETE", _hub_path(invocation, host_name))
    invocation.done(f"Unlinked hub {host_name}.")


# -- devices of a built-in hub ------------------------------------------------------------------

device_app = typer.Typer(help="One device of a built-in hub.", no_args_is_help=True)
app.add_typer(device_app, name="device")

_DEVICE_COLUMNS = [
    ("Device ID", field("deviceId")),
    ("Authentication", field("authenticationKind")),
    ("IoT Edge", field("iotEdge")),
    ("Status", field("status")),
    ("Last updated", field("lastUpdatedDateTimeUtc")),
]
_DEVICE_ROWS = [
    ("Device ID", field("deviceId")),
    ("Hub", field("hubHostName")),
    ("Authentication", field("authenticationKind")),
    ("Credentials", field("authentication")),
    ("IoT Edge", field("iotEdge")),
    ("Status", field("status")),
    ("Tags", field("twin.tags")),
    ("Desired", field("twin.desired")),
    ("Desired version", field("twin.desiredVersion")),
    ("Reported", field("twin.reported")),
    ("Reported version", field("twin.reportedVersion")),
    ("ETag", field("etag")),
]
DeviceArgument = Annotated[str, typer.Argument(help="Device ID on the hub.")]
# Devices fetched per request when listing; the server pages with `after`.
DEVICE_PAGE_SIZE = 500


def _device_path(invocation: Invocation, host: str, device_id: str) -> str:
    return _hub_path(invocation, host) + "/devices/" + quote(device_id, safe="")


@operator_command(app, "devices")
def devices(invocation: Invocation, host_name: HostArgument) -> None:
    """List the devices of a built-in hub."""
    items: list[dict[str, object]] = []
    query = {"limit": str(DEVICE_PAGE_SIZE)}
    while True:
        page = invocation.client.admin(
            "GET", _hub_path(invocation, host_name) + "/devices", query=query
        )
        items.extend(page["value"])
        if not page.get("nextAfter"):
            break
        query = {"limit": str(DEVICE_PAGE_SIZE), "after": page["nextAfter"]}
    invocation.emit(items, lambda rows: table(rows, _DEVICE_COLUMNS, empty="No devices."))


@operator_command(device_app, "show")
def show_device(invocation: Invocation, host_name: HostArgument, device_id: DeviceArgument) -> None:
    """Show a device with its twin (keys masked)."""
    device = invocation.client.admin("GET", _device_path(invocation, host_name, device_id))
    invocation.emit(device, lambda item: details(item, _DEVICE_ROWS))


@operator_command(device_app, "delete")
def delete_device(
    invocation: Invocation, host_name: HostArgument, device_id: DeviceArgument
) -> None:
    """Delete a device from a built-in hub (its registration state stays)."""
    invocation.client.admin("DELETE", _device_path(invocation, host_name, device_id))
    invocation.done(f"Deleted device {device_id} from {host_name}.")
