"""`opendps enrollment-group create|list|show|update|delete`: enrollment groups.

Groups attest with a symmetric group key (devices use keys derived from it, see
`opendps compute-device-key`) or with X.509: a signing certificate (`--certificate`) or the
name of a verified CA certificate of the instance (`--ca-name`).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from opendps.cli import enrollment_options as opt
from opendps.cli.options import Invocation, operator_command
from opendps.cli.output import details, field, table
from opendps.cli.warnings import warn_from_response

app = typer.Typer(
    help="Enrollment groups (many devices sharing a key or a CA).", no_args_is_help=True
)

_COLUMNS = [
    ("Group ID", field("enrollmentGroupId")),
    ("Attestation", opt.attestation_summary),
    ("Status", field("provisioningStatus")),
    ("IoT hubs", field("iotHubs")),
]
_ROWS = opt.enrollment_rows("Group ID", "enrollmentGroupId")

GroupId = Annotated[str, typer.Argument(help="Enrollment group ID.")]


def _path(group_id: str) -> str:
    return "/enrollmentGroups/" + quote(group_id, safe="")


def _show(invocation: Invocation, group: Any) -> None:
    invocation.emit(group, lambda item: details(item, _ROWS))


@operator_command(app, "create")
def create(
    invocation: Invocation,
    group_id: GroupId,
    primary_key: opt.PrimaryKey = None,
    secondary_key: opt.SecondaryKey = None,
    certificate: opt.Certificate = None,
    secondary_certificate: opt.SecondaryCertificate = None,
    ca_name: opt.CaName = None,
    secondary_ca_name: opt.SecondaryCaName = None,
    initial_twin: opt.InitialTwin = None,
    iot_edge: opt.IotEdgeFlag = False,
    iot_hubs: opt.IotHubs = None,
    allocation_policy: opt.Allocation = None,
    reprovision_policy: opt.Reprovision = None,
    webhook_url: opt.WebhookUrl = None,
    webhook_api_version: opt.WebhookApiVersion = None,
    disabled: opt.DisabledFlag = False,
) -> None:
    """Create (or replace) a group: symmetric key by default, --certificate (signing
    certificate) or --ca-name (verified CA of the instance) for X.509. Prints its keys."""
    attestation = opt.AttestationOptions(
        primary_key,
        secondary_key,
        certificate,
        secondary_certificate,
        None,
        ca_name,
        secondary_ca_name,
    ).mechanism("group")
    body: dict[str, Any] = {
        "enrollmentGroupId": group_id,
        "attestation": attestation or {"type": "symmetricKey", "symmetricKey": {}},
    }
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
    answer = invocation.client.service("PUT", _path(group_id), body=body)
    _show(invocation, warn_from_response(answer))


@operator_command(app, "list")
def list_groups(invocation: Invocation, top: opt.Top = None) -> None:
    """List the enrollment groups (keys left out)."""
    items = opt.query_all(
        invocation.client, "/enrollmentGroups/query", top=top, body={"query": "*"}
    )
    invocation.emit(items, lambda rows: table(rows, _COLUMNS, empty="No enrollment groups."))


@operator_command(app, "show")
def show(invocation: Invocation, group_id: GroupId, show_keys: opt.ShowKeys = False) -> None:
    """Show an enrollment group."""
    group = invocation.client.service("GET", _path(group_id)).body
    if show_keys:
        group["attestation"] = invocation.client.service(
            "POST", _path(group_id) + "/attestationmechanism"
        ).body
    _show(invocation, group)


@operator_command(app, "update")
def update(
    invocation: Invocation,
    group_id: GroupId,
    primary_key: opt.PrimaryKey = None,
    secondary_key: opt.SecondaryKey = None,
    certificate: opt.Certificate = None,
    secondary_certificate: opt.SecondaryCertificate = None,
    ca_name: opt.CaName = None,
    secondary_ca_name: opt.SecondaryCaName = None,
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
    """Change some settings of a group; the others stay (keys included)."""
    current = invocation.client.service("GET", _path(group_id)).body
    attestation = opt.AttestationOptions(
        primary_key,
        secondary_key,
        certificate,
        secondary_certificate,
        None,
        ca_name,
        secondary_ca_name,
    ).mechanism("group")
    if attestation is not None:
        current["attestation"] = attestation
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
        invocation.client.service("PUT", _path(group_id), body=current, headers=headers).body,
    )


@operator_command(app, "delete")
def delete(invocation: Invocation, group_id: GroupId, etag: opt.Etag = None) -> None:
    """Delete an enrollment group (its devices' registration states stay)."""
    headers = {"If-Match": etag} if etag else None
    invocation.client.service("DELETE", _path(group_id), headers=headers)
    invocation.done(f"Deleted enrollment group {group_id}.")
