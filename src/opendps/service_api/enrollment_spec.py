"""Building and checking the provisioning settings individual enrollments and groups share.

`build_spec` turns a validated wire object into an `EnrollmentSpec` and applies the rules that
need the instance: hubs must be linked to it, CA references must name its CA certificates, and
custom allocation must be complete. Every failure is DpsError(400) raised before anything is
written, so a refused request changes nothing.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

from opendps.model.enrollment import Attestation, EnrollmentSpec
from opendps.model.errors import INVALID_BODY, DpsError
from opendps.model.hub import AllocationPolicy
from opendps.model.instance import Instance
from opendps.service_api import converters, schemas
from opendps.service_api.api_version import is_supported_api_version
from opendps.service_api.context import ServiceContext

__all__ = ["build_spec"]


async def build_spec(
    ctx: ServiceContext,
    instance: Instance,
    wire: schemas.IndividualEnrollment | schemas.EnrollmentGroup,
    *,
    kind: converters.EnrollmentKind,
    existing: Attestation | None,
) -> EnrollmentSpec:
    """The stored settings for `wire` on `instance`.

    `existing` is the attestation stored before this write (keys and certificates a client
    left out are kept from it). Raises DpsError(400) when the settings are invalid.
    """
    attestation = converters.attestation_from_wire(
        wire.attestation, kind=kind, existing=existing, new_key=ctx.ids.new_key
    )
    spec = converters.spec_from_wire(wire, attestation)
    _check_allocation(spec, instance)
    spec = await _with_linked_hubs(ctx, instance.id, spec)
    await _check_ca_references(ctx, instance.id, attestation)
    return spec


def _check_allocation(spec: EnrollmentSpec, instance: Instance) -> None:
    custom = spec.custom_allocation
    if custom is not None and spec.allocation_policy is not AllocationPolicy.CUSTOM:
        raise _invalid("customAllocationDefinition is only allowed with allocationPolicy 'custom'")
    if (
        spec.allocation_policy is AllocationPolicy.CUSTOM
        and custom is None
        and instance.custom_allocation is None
    ):
        raise _invalid("allocationPolicy 'custom' needs a customAllocationDefinition")
    if custom is not None:
        _check_webhook_url(custom.webhook_url)
        if not is_supported_api_version(custom.api_version):
            raise _invalid("customAllocationDefinition.apiVersion is not a known DPS api-version")
    if spec.allocation_policy is AllocationPolicy.STATIC and not (
        spec.iot_hubs or spec.iot_hub_host_name
    ):
        raise _invalid("allocationPolicy 'static' needs the hub in iotHubs")


def _check_webhook_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        valid = parts.scheme.lower() == "https" and bool(parts.hostname)
        parts.port  # noqa: B018 -- validates the port; a malformed one raises ValueError
    except ValueError:
        valid = False
    if not valid:
        raise _invalid("customAllocationDefinition.webhookUrl must be an https:// URL")


async def _with_linked_hubs(
    ctx: ServiceContext, instance_id: str, spec: EnrollmentSpec
) -> EnrollmentSpec:
    """Check every named hub is linked to the instance; store the linked hub's spelling."""
    if not spec.iot_hubs and spec.iot_hub_host_name is None:
        return spec
    linked = {
        hub.host_name.lower(): hub.host_name
        for hub in await ctx.store.list_linked_hubs(instance_id)
    }
    hubs: list[str] = []
    for name in spec.iot_hubs:
        canonical = linked.get(name.strip().lower())
        if canonical is None:
            raise _invalid(
                f"iotHubs names '{name[:253]}', which is not a hub linked to this service"
            )
        if canonical not in hubs:
            hubs.append(canonical)
    legacy = spec.iot_hub_host_name
    if legacy is not None:
        if legacy.strip().lower() not in linked:
            raise _invalid(f"iotHubHostName '{legacy[:253]}' is not a hub linked to this service")
        legacy = linked[legacy.strip().lower()]
    return dataclasses.replace(spec, iot_hubs=tuple(hubs), iot_hub_host_name=legacy)


async def _check_ca_references(
    ctx: ServiceContext, instance_id: str, attestation: Attestation
) -> None:
    references = attestation.x509.ca_references if attestation.x509 else None
    if references is None:
        return
    for slot, name in (("primary", references.primary), ("secondary", references.secondary)):
        if name is not None and await ctx.store.get_ca_certificate(instance_id, name) is None:
            raise _invalid(
                f"attestation.x509.caReferences.{slot} names '{name[:64]}', "
                "which is not a CA certificate of this service"
            )


def _invalid(message: str) -> DpsError:
    return DpsError(INVALID_BODY, message[0].upper() + message[1:] + ".")
