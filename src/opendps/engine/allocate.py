"""Which hub an attested device gets: pure decisions shared by registration and dry runs.

`ProvisioningEngine` (register.py) calls these for real registrations and `engine/explain.py`
for `allocation explain`, so a dry run shows exactly the decision a device would meet.
"""

from __future__ import annotations

from collections.abc import Sequence

from opendps.allocation.geo_latency import LatencyTable
from opendps.allocation.select import (
    CustomAllocationRequest,
    candidate_hubs,
    enrollment_hub_names,
    select_hub,
)
from opendps.engine.reprovision import current_hub, needs_allocation
from opendps.model.enrollment import (
    AttestationType,
    CustomAllocationDefinition,
    EnrollmentGroup,
    IndividualEnrollment,
)
from opendps.model.errors import CUSTOM_ALLOCATION_FAILED, NO_HUB, DpsError
from opendps.model.hub import AllocationPolicy, LinkedHub
from opendps.model.instance import Instance
from opendps.model.json import JsonValue
from opendps.model.registration import RegistrationState

Enrollment = IndividualEnrollment | EnrollmentGroup


def effective_policy(enrollment: Enrollment, instance: Instance) -> AllocationPolicy:
    """The enrollment's allocation policy, else the instance's (protocol.md §7.3)."""
    return enrollment.spec.allocation_policy or instance.allocation_policy


def effective_webhook(enrollment: Enrollment, instance: Instance) -> CustomAllocationDefinition:
    """The webhook of custom allocation: the enrollment's, else the instance's.

    Raises DpsError(CUSTOM_ALLOCATION_FAILED) when neither has one.
    """
    definition = enrollment.spec.custom_allocation or instance.custom_allocation
    if definition is None:
        raise DpsError(CUSTOM_ALLOCATION_FAILED, "Custom allocation has no webhook configured.")
    return definition


def choose_hub(
    enrollment: Enrollment,
    registration_id: str,
    previous: RegistrationState | None,
    linked: Sequence[LinkedHub],
    policy: AllocationPolicy,
    latency: LatencyTable,
) -> LinkedHub:
    """The allocated hub (built-in policies), or the current one when the reprovision policy
    keeps it. Raises DpsError(NO_HUB)."""
    spec = enrollment.spec
    if needs_allocation(previous, spec.reprovision_policy):
        return select_hub(
            policy,
            linked,
            registration_id,
            enrollment_hubs=enrollment_hub_names(spec),
            latency=latency,
        )
    name = current_hub(previous) or ""
    hub = next((h for h in linked if h.host_name.lower() == name.lower()), None)
    if hub is None:
        raise DpsError(NO_HUB, f"No IoT hub could be assigned: {name} is no longer linked.")
    return hub


def custom_allocation_request(
    enrollment: Enrollment,
    instance: Instance,
    registration_id: str,
    attestation_type: AttestationType,
    previous: RegistrationState | None,
    linked: Sequence[LinkedHub],
    payload: JsonValue,
    *,
    dry_run: bool = False,
) -> CustomAllocationRequest:
    """What the webhook is asked for this device. Raises DpsError (no webhook, NO_HUB)."""
    definition = effective_webhook(enrollment, instance)
    candidates = candidate_hubs(linked, enrollment_hub_names(enrollment.spec))
    if not candidates:
        raise DpsError(NO_HUB, "No IoT hub could be assigned: no linked hub is a candidate.")
    return CustomAllocationRequest(
        definition=definition,
        enrollment=enrollment,
        registration_id=registration_id,
        attestation_type=attestation_type,
        payload=payload,
        candidates=tuple(candidates),
        current_hub=current_hub(previous),
        current_device_id=previous.device_id if previous is not None else None,
        dry_run=dry_run,
    )
