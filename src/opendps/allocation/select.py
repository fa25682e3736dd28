"""The single entry point of allocation: which hubs are candidates, and which one a device gets.

`select_hub` covers the built-in policies (hashed, geoLatency, static) and is pure. The custom
policy calls out over HTTPS, so it is an injected `CustomAllocator` (custom.py implements it
with aiohttp); the engine receives one and calls it, and this module only defines its contract,
which keeps the engine free of any I/O library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from opendps.allocation.geo_latency import LatencyTable, select_geo_latency
from opendps.allocation.hashed import select_hashed
from opendps.allocation.static import select_static
from opendps.model.enrollment import (
    AttestationType,
    CustomAllocationDefinition,
    EnrollmentGroup,
    EnrollmentSpec,
    IndividualEnrollment,
)
from opendps.model.errors import NO_HUB, DpsError
from opendps.model.hub import AllocationPolicy, LinkedHub
from opendps.model.json import JsonObject, JsonValue


def enrollment_hub_names(spec: EnrollmentSpec) -> tuple[str, ...]:
    """The hubs an enrollment names: `iotHubs`, else the legacy single `iotHubHostName`."""
    if spec.iot_hubs:
        return spec.iot_hubs
    return (spec.iot_hub_host_name,) if spec.iot_hub_host_name else ()


def candidate_hubs(linked: Sequence[LinkedHub], enrollment_hubs: Sequence[str]) -> list[LinkedHub]:
    """Candidates = the enrollment's hubs when it names any, else every linked hub to which the
    instance-level policy applies (`apply_allocation_policy`). Named hubs that are not linked are
    ignored. Order follows the linked-hub list, so nothing depends on how the enrollment lists them.
    """
    if enrollment_hubs:
        wanted = {name.lower() for name in enrollment_hubs}
        return [hub for hub in linked if hub.host_name.lower() in wanted]
    return [hub for hub in linked if hub.apply_allocation_policy]


def select_hub(
    policy: AllocationPolicy,
    linked: Sequence[LinkedHub],
    registration_id: str,
    *,
    enrollment_hubs: Sequence[str] = (),
    latency: LatencyTable | None = None,
) -> LinkedHub:
    """Pick the hub for `registration_id` among the instance's `linked` hubs.

    Returns the chosen hub. Raises DpsError(NO_HUB) (registration `failed`, 400208) when no
    hub can be assigned, and ValueError for `custom`, which goes through a `CustomAllocator`.
    """
    candidates = candidate_hubs(linked, enrollment_hubs)
    if policy is AllocationPolicy.STATIC:
        return select_static(linked, candidates, enrollment_hubs[0] if enrollment_hubs else None)
    if policy is AllocationPolicy.CUSTOM:
        raise ValueError("custom allocation is done by a CustomAllocator, not select_hub")
    if not candidates:
        raise DpsError(NO_HUB, "No IoT hub could be assigned: no linked hub is a candidate.")
    if policy is AllocationPolicy.GEO_LATENCY:
        return select_geo_latency(candidates, registration_id, latency or LatencyTable())
    return select_hashed(candidates, registration_id)


@dataclass(frozen=True, slots=True)
class CustomAllocationRequest:
    """What the custom allocation webhook is told (protocol.md §8), as typed records."""

    definition: CustomAllocationDefinition
    enrollment: IndividualEnrollment | EnrollmentGroup
    registration_id: str
    attestation_type: AttestationType
    # The device's payload, verbatim (any JSON value; None when it sent none).
    payload: JsonValue
    # `linkedHubs`: the candidates (`candidate_hubs`); the answer must be one of them.
    candidates: tuple[LinkedHub, ...]
    # Only on re-registration of a device that has a hub.
    current_hub: str | None = None
    current_device_id: str | None = None
    # A dry run (`allocation explain`, the check when a webhook is saved): nothing will be
    # registered, and the webhook is told so by the `x-opendps-dry-run: true` header.
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class CustomAllocation:
    """The webhook's answer: the hub, an optional initial twin that overrides the enrollment's
    (and migration), and the payload handed back to the device in `registrationState.payload`.
    """

    hub: LinkedHub
    initial_twin: JsonObject | None = None
    payload: JsonValue = None


class CustomAllocator(Protocol):
    async def allocate(self, request: CustomAllocationRequest) -> CustomAllocation:
        """Ask the webhook. Returns its choice; never hangs (bounded by a timeout).

        Raises DpsError: CUSTOM_ALLOCATION_TIMEOUT (504210), CUSTOM_ALLOCATION_FAILED (500210:
        unreachable, non-2xx, not an AllocationResponse), NO_HUB (400208: a hub not among the
        candidates). The engine turns each into a `failed` registration.
        """
        ...
