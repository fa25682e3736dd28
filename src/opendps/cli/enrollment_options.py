"""Options that individual enrollments and enrollment groups share, and the DPS body they build.

The bodies are the DPS service API's 2021-10-01 shapes (protocol.md §7.2): the CLI writes
enrollments through the same routes the Azure SDKs use.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from opendps.cli.certificates import read_certificate_file
from opendps.cli.client import Client, CliError
from opendps.cli.enrollment_rows import REPROVISION_POLICIES
from opendps.cli.output import Column, field
from opendps.model.hub import AllocationPolicy

# Items per query page; the server caps pages at its own maximum.
QUERY_PAGE_SIZE = 100
_ATTESTATION = "Attestation"
_PROVISIONING = "Provisioning"


class ReprovisionPolicyName(enum.StrEnum):
    """Azure CLI's names (az iot dps enrollment create --reprovision-policy)."""

    REPROVISION_AND_MIGRATE_DATA = "reprovisionandmigratedata"
    REPROVISION_AND_RESET_DATA = "reprovisionandresetdata"
    NEVER = "never"


def _file_option(help_text: str, panel: str) -> Any:
    return typer.Option(
        help=help_text, exists=True, dir_okay=False, show_default=False, rich_help_panel=panel
    )


PrimaryKey = Annotated[
    str | None,
    typer.Option(
        help="Symmetric key, base64 (default: generated).",
        show_default=False,
        rich_help_panel=_ATTESTATION,
    ),
]
SecondaryKey = Annotated[
    str | None,
    typer.Option(
        help="Symmetric key, base64 (default: generated).",
        show_default=False,
        rich_help_panel=_ATTESTATION,
    ),
]
Certificate = Annotated[
    Path | None, _file_option("X.509 certificate file (PEM or DER).", _ATTESTATION)
]
SecondaryCertificate = Annotated[
    Path | None, _file_option("Second X.509 certificate file.", _ATTESTATION)
]
EndorsementKey = Annotated[
    str | None,
    typer.Option(
        help="TPM endorsement key (base64 TPM2B_PUBLIC).",
        show_default=False,
        rich_help_panel=_ATTESTATION,
    ),
]
CaName = Annotated[
    str | None,
    typer.Option(
        help="Name of a verified CA certificate of the instance.",
        show_default=False,
        rich_help_panel=_ATTESTATION,
    ),
]
SecondaryCaName = Annotated[
    str | None,
    typer.Option(
        help="Name of a second CA certificate.", show_default=False, rich_help_panel=_ATTESTATION
    ),
]
InitialTwin = Annotated[
    Path | None,
    _file_option(
        'Initial twin JSON: {"tags": {...}, "properties": {"desired": {...}}}.', _PROVISIONING
    ),
]
IotHubs = Annotated[
    str | None,
    typer.Option(
        help="Candidate hub host names, comma-separated (default: every linked hub).",
        show_default=False,
        rich_help_panel=_PROVISIONING,
    ),
]
Allocation = Annotated[
    AllocationPolicy | None,
    typer.Option(
        help="Allocation policy (default: the instance's).",
        show_default=False,
        rich_help_panel=_PROVISIONING,
    ),
]
Reprovision = Annotated[
    ReprovisionPolicyName | None,
    typer.Option(
        help="What re-registration does (default: reprovisionandmigratedata).",
        show_default=False,
        rich_help_panel=_PROVISIONING,
    ),
]
WebhookUrl = Annotated[
    str | None,
    typer.Option(
        help="Custom allocation webhook URL (implies --allocation-policy custom).",
        show_default=False,
        rich_help_panel=_PROVISIONING,
    ),
]
WebhookApiVersion = Annotated[
    str | None,
    typer.Option(
        help="api-version of the enrollment the webhook receives.",
        show_default=False,
        rich_help_panel=_PROVISIONING,
    ),
]
IotEdgeFlag = Annotated[
    bool,
    typer.Option("--iot-edge", help="Devices are IoT Edge devices.", rich_help_panel=_PROVISIONING),
]
IotEdgeSwitch = Annotated[
    bool | None,
    typer.Option("--iot-edge/--no-iot-edge", show_default=False, rich_help_panel=_PROVISIONING),
]
DisabledFlag = Annotated[
    bool,
    typer.Option(
        "--disabled", help="Create the enrollment disabled.", rich_help_panel=_PROVISIONING
    ),
]
DisabledSwitch = Annotated[
    bool | None,
    typer.Option("--disabled/--enabled", show_default=False, rich_help_panel=_PROVISIONING),
]
Etag = Annotated[
    str | None, typer.Option(help="Only if the stored etag is still this.", show_default=False)
]
ShowKeys = Annotated[
    bool, typer.Option("--show-keys", help="Include symmetric keys and certificates.")
]
Top = Annotated[
    int | None, typer.Option(help="At most this many items.", min=1, show_default=False)
]


@dataclass(frozen=True, slots=True)
class AttestationOptions:
    primary_key: str | None = None
    secondary_key: str | None = None
    certificate: Path | None = None
    secondary_certificate: Path | None = None
    endorsement_key: str | None = None
    ca_name: str | None = None
    secondary_ca_name: str | None = None

    def mechanism(self, kind: Literal["individual", "group"]) -> dict[str, Any] | None:
        """The `attestation` object these options describe, or None if they name none."""
        chosen = [
            name
            for name, given in (
                ("symmetric key", self.primary_key or self.secondary_key),
                ("certificate", self.certificate or self.secondary_certificate),
                ("TPM", self.endorsement_key),
                ("CA reference", self.ca_name or self.secondary_ca_name),
            )
            if given
        ]
        if len(chosen) > 1:
            raise CliError(f"choose one attestation, not {' and '.join(chosen)}")
        if not chosen:
            return None
        if self.certificate or self.secondary_certificate:
            return self._x509(
                "clientCertificates" if kind == "individual" else "signingCertificates"
            )
        if self.endorsement_key:
            return {"type": "tpm", "tpm": {"endorsementKey": self.endorsement_key}}
        if self.ca_name or self.secondary_ca_name:
            if not self.ca_name:
                raise CliError("--secondary-ca-name needs --ca-name")
            references = {"primary": self.ca_name, "secondary": self.secondary_ca_name}
            return {"type": "x509", "x509": {"caReferences": _without_none(references)}}
        keys = {"primaryKey": self.primary_key, "secondaryKey": self.secondary_key}
        return {"type": "symmetricKey", "symmetricKey": _without_none(keys)}

    def _x509(self, section: str) -> dict[str, Any]:
        if self.certificate is None:
            raise CliError("--secondary-certificate needs --certificate")
        pair = {"primary": {"certificate": read_certificate_file(self.certificate)}}
        if self.secondary_certificate is not None:
            pair["secondary"] = {"certificate": read_certificate_file(self.secondary_certificate)}
        return {"type": "x509", "x509": {section: pair}}


@dataclass(frozen=True, slots=True)
class ProvisioningOptions:
    """Settings shared by both kinds; None means "leave as it is" (update) or "default"."""

    initial_twin: Path | None = None
    iot_edge: bool | None = None
    iot_hubs: str | None = None
    allocation_policy: AllocationPolicy | None = None
    reprovision_policy: ReprovisionPolicyName | None = None
    webhook_url: str | None = None
    webhook_api_version: str | None = None
    disabled: bool | None = None

    def apply(self, body: dict[str, Any]) -> None:
        """Write the given settings into a DPS enrollment body."""
        if self.initial_twin is not None:
            body["initialTwin"] = _read_twin(self.initial_twin)
        if self.iot_edge is not None:
            body["capabilities"] = {"iotEdge": self.iot_edge}
        if self.iot_hubs is not None:
            body["iotHubs"] = [hub.strip() for hub in self.iot_hubs.split(",") if hub.strip()]
        if self.reprovision_policy is not None:
            body["reprovisionPolicy"] = REPROVISION_POLICIES[self.reprovision_policy.value]
        if self.disabled is not None:
            body["provisioningStatus"] = "disabled" if self.disabled else "enabled"
        self._apply_allocation(body)

    def _apply_allocation(self, body: dict[str, Any]) -> None:
        if self.webhook_url is not None or self.webhook_api_version is not None:
            custom = dict(body.get("customAllocationDefinition") or {})
            if self.webhook_url is not None:
                custom["webhookUrl"] = self.webhook_url
            if self.webhook_api_version is not None:
                custom["apiVersion"] = self.webhook_api_version
            body["customAllocationDefinition"] = custom
            body["allocationPolicy"] = AllocationPolicy.CUSTOM.value
        if self.allocation_policy is not None:
            body["allocationPolicy"] = self.allocation_policy.value
            if self.allocation_policy is not AllocationPolicy.CUSTOM:
                body.pop("customAllocationDefinition", None)


def _read_twin(path: Path) -> dict[str, Any]:
    try:
        twin = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CliError(f"cannot read the initial twin {path}: {err}") from None
    if not isinstance(twin, dict) or set(twin) - {"tags", "properties"}:
        raise CliError(
            f'{path} must hold {{"tags": {{...}}, "properties": {{"desired": {{...}}}}}}'
        )
    return twin


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def query_all(client: Client, path: str, *, top: int | None, body: Any = None) -> list[Any]:
    """Every item of a DPS query, page by page (`x-ms-continuation`), at most `top`."""
    items: list[Any] = []
    continuation: str | None = None
    while True:
        page_size = min(QUERY_PAGE_SIZE, top - len(items)) if top else QUERY_PAGE_SIZE
        headers = {"x-ms-max-item-count": str(page_size)}
        if continuation:
            headers["x-ms-continuation"] = continuation
        answer = client.service("POST", path, body=body, headers=headers)
        items += answer.body or []
        continuation = answer.headers.get("x-ms-continuation")
        if not continuation or (top is not None and len(items) >= top):
            return items[:top] if top else items


def attestation_summary(item: Mapping[str, Any]) -> str:
    """`symmetricKey`, `x509 (clientCertificates)`, `x509 (caReferences: root)`, `tpm`."""
    attestation = item.get("attestation") or {}
    kind = str(attestation.get("type", ""))
    x509 = attestation.get("x509") or {}
    for section, value in x509.items():
        if value:
            names = ""
            if section == "caReferences":
                names = ": " + ", ".join(str(v) for v in value.values() if v)
            return f"{kind} ({section}{names})"
    return kind


def enrollment_rows(id_label: str, id_field: str) -> Sequence[Column]:
    """The rows `show` prints for an individual enrollment or a group."""
    return [
        (id_label, field(id_field)),
        ("Device ID", field("deviceId")),
        ("Attestation", attestation_summary),
        ("Primary key", field("attestation.symmetricKey.primaryKey")),
        ("Secondary key", field("attestation.symmetricKey.secondaryKey")),
        ("Certificate", _certificate_subjects),
        ("Provisioning status", field("provisioningStatus")),
        ("IoT hubs", field("iotHubs")),
        ("Allocation policy", field("allocationPolicy")),
        ("Webhook", field("customAllocationDefinition.webhookUrl")),
        ("IoT Edge", field("capabilities.iotEdge")),
        ("Reprovision policy", field("reprovisionPolicy")),
        ("Initial twin", field("initialTwin")),
        ("Registration status", field("registrationState.status")),
        ("Assigned hub", field("registrationState.assignedHub")),
        ("ETag", field("etag")),
        ("Created", field("createdDateTimeUtc")),
        ("Updated", field("lastUpdatedDateTimeUtc")),
    ]


def _certificate_subjects(item: Mapping[str, Any]) -> list[str]:
    x509 = (item.get("attestation") or {}).get("x509") or {}
    subjects = []
    for section in ("clientCertificates", "signingCertificates"):
        for slot in ("primary", "secondary"):
            info = ((x509.get(section) or {}).get(slot) or {}).get("info") or {}
            if info:
                subjects.append(f"{slot}: {info.get('subjectName')} ({info.get('sha1Thumbprint')})")
    return subjects
