"""Allocation you can see before a device arrives: the whole decision as a dry run.

`explain_allocation` answers "what would happen if this device registered now?" without
registering anything: which enrollment matches, which allocation policy applies (the
enrollment's or the instance's), the linked hubs with their weights and which are candidates,
the hub chosen and why, the previous registration and what reprovisioning would do, and for
custom allocation the webhook's actual answer to a request marked as a dry run
(`x-opendps-dry-run: true`, allocation/custom.py). It uses the engine's own decisions
(engine/allocate.py, reprovision.py), so it cannot drift from what a device meets.

Without a device credential a dry run cannot attest: an individual enrollment for the
registration ID decides alone (as in the engine), otherwise every enrollment group the device
could belong to is explained and the device's key (symmetric-key groups) or certificate chain
(X.509 groups) decides which.

`check_webhook` is the save-time check: one dry-run call to a webhook just saved with an
enrollment or an instance allocation policy, whose failure the APIs return as a warning.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

from opendps.allocation.geo_latency import LatencyTable
from opendps.allocation.hashed import hub_score
from opendps.allocation.select import (
    CustomAllocation,
    CustomAllocationRequest,
    CustomAllocator,
    candidate_hubs,
    enrollment_hub_names,
)
from opendps.engine.allocate import (
    Enrollment,
    choose_hub,
    custom_allocation_request,
    effective_policy,
)
from opendps.engine.api import DEFAULT_HUB_TIMEOUT_SECONDS
from opendps.engine.assign import device_id_for
from opendps.engine.lookup import AttestedDevice
from opendps.engine.reprovision import TwinSource, needs_allocation, plan_assignment
from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    EnrollmentGroup,
    EnrollmentSpec,
    IndividualEnrollment,
    ProvisioningStatus,
)
from opendps.model.errors import (
    CUSTOM_ALLOCATION_FAILED,
    CUSTOM_ALLOCATION_TIMEOUT,
    DpsError,
)
from opendps.model.hub import AllocationPolicy, LinkedHub
from opendps.model.instance import Instance
from opendps.model.json import JsonObject, JsonValue
from opendps.model.registration import RegistrationState, RegistrationStatus, Substatus
from opendps.store.interface import Store

# Page size when listing an instance's groups (Azure allows 100 symmetric-key and 100 X.509
# groups per instance: one page in practice).
GROUP_PAGE_SIZE = 500
# The registration ID and group ID a save-time webhook check sends when there is no device:
# not a valid hub device ID clash risk, since nothing is registered, and easy to recognise in
# webhook logs next to the dry-run header.
DRY_RUN_REGISTRATION_ID = "opendps-dry-run"
DRY_RUN_GROUP_ID = "opendps-dry-run"


class PolicySource(enum.StrEnum):
    ENROLLMENT = "enrollment"
    INSTANCE = "instance"


class EnrollmentKind(enum.StrEnum):
    INDIVIDUAL = "individualEnrollment"
    GROUP = "enrollmentGroup"


@dataclass(frozen=True, slots=True)
class HubCandidate:
    """A linked hub as allocation sees it; `candidate` says whether it may be chosen."""

    host_name: str
    allocation_weight: int
    apply_allocation_policy: bool
    location: str | None
    candidate: bool


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """What the custom allocation webhook answered to the dry run (hub, or an error)."""

    hub: str | None = None
    initial_twin: JsonObject | None = None
    payload: JsonValue = None
    error_code: int | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class Reprovisioning:
    """What putting the device on the chosen hub would do, given its previous registration."""

    substatus: Substatus
    # initial: the enrollment's (or webhook's) twin; migrate: copied from the old hub;
    # keep: the hub's twin stays as it is.
    twin: str
    removes_from_hub: str | None
    removes_device_id: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """The decision for the device under one enrollment."""

    enrollment_kind: EnrollmentKind
    enrollment_id: str
    attestation_type: AttestationType
    provisioning_status: ProvisioningStatus
    # What decides whether the device belongs to this enrollment.
    matched_by: str
    policy: AllocationPolicy
    policy_source: PolicySource
    hubs: tuple[HubCandidate, ...]
    # `assigned` (would be), `failed` or `disabled`.
    outcome: RegistrationStatus
    reason: str
    hub: str | None = None
    device_id: str | None = None
    # The twin the device would start with (None: kept, migrated, or none configured).
    initial_twin: JsonObject | None = None
    reprovisioning: Reprovisioning | None = None
    webhook: WebhookAnswer | None = None
    error_code: int | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class AllocationExplanation:
    registration_id: str
    summary: str
    decisions: tuple[Decision, ...]
    # The device's current registration state, which reprovisioning starts from.
    previous: RegistrationState | None = None


async def explain_allocation(
    store: Store,
    instance: Instance,
    registration_id: str,
    payload: JsonValue,
    *,
    custom_allocator: CustomAllocator | None,
    latency: LatencyTable,
    webhook_deadline_seconds: float = DEFAULT_HUB_TIMEOUT_SECONDS,
) -> AllocationExplanation:
    """The decision a registration of `registration_id` would meet now. Writes nothing.

    `registration_id` must already be valid (model.ids.parse_registration_id).
    """
    previous = await store.get_registration_state(instance.id, registration_id)
    linked = tuple(await store.list_linked_hubs(instance.id))
    context = _Context(
        instance, registration_id, payload, previous, linked, custom_allocator, latency,
        webhook_deadline_seconds,
    )  # fmt: skip
    individual = await store.get_individual_enrollment(instance.id, registration_id)
    if individual is not None:
        decision = await context.decide(individual, _individual_match(individual))
        summary = (
            "An individual enrollment exists for this registration ID; it decides alone "
            "(enrollment groups are not considered)."
        )
        return AllocationExplanation(registration_id, summary, (decision,), previous)
    groups = await _groups(store, instance.id, previous)
    decisions = [await context.decide(group, _group_match(group, previous)) for group in groups]
    return AllocationExplanation(
        registration_id, _group_summary(groups), tuple(decisions), previous
    )


async def check_webhook(
    allocator: CustomAllocator | None,
    instance: Instance,
    linked: Sequence[LinkedHub],
    enrollment: Enrollment | None,
    *,
    deadline_seconds: float = DEFAULT_HUB_TIMEOUT_SECONDS,
) -> str | None:
    """One dry-run call to the webhook `enrollment` (None: the instance policy) uses.

    Returns a warning for the operator when the webhook fails or answers something a device
    would fail with, None when it answers well or when there is no webhook client to call it
    with. Never raises for the webhook's failures.
    """
    if allocator is None:  # no webhook client wired (app.wiring always wires one): no check
        return None
    subject = enrollment if enrollment is not None else _instance_placeholder(instance)
    registration_id = (
        subject.registration_id
        if isinstance(subject, IndividualEnrollment)
        else DRY_RUN_REGISTRATION_ID
    )
    try:
        request = custom_allocation_request(
            subject,
            instance,
            registration_id,
            subject.spec.attestation.type,
            None,
            linked,
            None,
            dry_run=True,
        )
        await _bounded(allocator, request, deadline_seconds)
    except DpsError as err:
        return f"Custom allocation webhook check failed: {err.message} (errorCode {err.error_code})"
    return None


# -- matching ---------------------------------------------------------------------------------


def _individual_match(enrollment: IndividualEnrollment) -> str:
    kind = enrollment.spec.attestation.type
    if kind is AttestationType.SYMMETRIC_KEY:
        return "registration ID; the device's token must be signed with the enrollment's key"
    if kind is AttestationType.X509:
        return "registration ID; the device's certificate chain must match the enrollment's"
    return f"registration ID; the device must prove the enrollment's {kind} attestation"


def _group_match(group: EnrollmentGroup, previous: RegistrationState | None) -> str:
    if group.spec.attestation.type is AttestationType.X509:
        text = "a certificate chain decides: the device's chain must end in this group's CA"
    else:
        text = "the key decides: the device's key must be derived from this group's key"
    if previous is not None and previous.enrollment_group_id is not None:
        if previous.enrollment_group_id.lower() == group.enrollment_group_id.lower():
            text += " (the device registered through this group before)"
    return text


async def _groups(
    store: Store, instance_id: str, previous: RegistrationState | None
) -> list[EnrollmentGroup]:
    """Every group a device without an individual enrollment could belong to, the group it
    registered through before first (the engine tries it first too)."""
    groups: list[EnrollmentGroup] = []
    after: str | None = None
    while True:
        page = await store.list_enrollment_groups(instance_id, after=after, limit=GROUP_PAGE_SIZE)
        groups.extend(
            g
            for g in page.items
            if g.spec.attestation.type in (AttestationType.SYMMETRIC_KEY, AttestationType.X509)
        )
        if page.next_after is None:
            break
        after = page.next_after
    hint = (previous.enrollment_group_id or "").lower() if previous is not None else ""
    return sorted(groups, key=lambda g: g.enrollment_group_id.lower() != hint)


def _group_summary(groups: Sequence[EnrollmentGroup]) -> str:
    if not groups:
        return (
            "No individual enrollment and no enrollment group: the device would be refused "
            "(401 Unauthorized)."
        )
    if len(groups) == 1:
        return (
            "No individual enrollment; one enrollment group could take the device if its "
            "credential matches the group (otherwise it would be refused with 401)."
        )
    return (
        f"No individual enrollment; {len(groups)} enrollment groups could take the device. "
        "Its credential decides which: a symmetric key derived from one group's key, or a "
        "certificate chain ending in one group's CA."
    )


def _instance_placeholder(instance: Instance) -> EnrollmentGroup:
    """The enrollment a check of the instance-level webhook shows it: a symmetric-key group
    that follows the instance policy (no keys: the webhook never sees keys anyway)."""
    spec = EnrollmentSpec(attestation=Attestation(type=AttestationType.SYMMETRIC_KEY))
    return EnrollmentGroup(instance_id=instance.id, enrollment_group_id=DRY_RUN_GROUP_ID, spec=spec)


# -- deciding ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    instance: Instance
    registration_id: str
    payload: JsonValue
    previous: RegistrationState | None
    linked: tuple[LinkedHub, ...]
    allocator: CustomAllocator | None
    latency: LatencyTable
    webhook_deadline_seconds: float

    async def decide(self, enrollment: Enrollment, matched_by: str) -> Decision:
        spec = enrollment.spec
        policy = effective_policy(enrollment, self.instance)
        candidates = {h.host_name.lower() for h in candidate_hubs(self.linked, _names(spec))}
        base = Decision(
            enrollment_kind=(
                EnrollmentKind.INDIVIDUAL
                if isinstance(enrollment, IndividualEnrollment)
                else EnrollmentKind.GROUP
            ),
            enrollment_id=(
                enrollment.registration_id
                if isinstance(enrollment, IndividualEnrollment)
                else enrollment.enrollment_group_id
            ),
            attestation_type=spec.attestation.type,
            provisioning_status=spec.provisioning_status,
            matched_by=matched_by,
            policy=policy,
            policy_source=(
                PolicySource.ENROLLMENT if spec.allocation_policy else PolicySource.INSTANCE
            ),
            hubs=tuple(
                HubCandidate(
                    h.host_name,
                    h.allocation_weight,
                    h.apply_allocation_policy,
                    h.location,
                    h.host_name.lower() in candidates,
                )
                for h in self.linked
            ),
            outcome=RegistrationStatus.DISABLED,
            reason="The enrollment is disabled: the device would be answered `disabled`.",
        )
        if spec.provisioning_status is ProvisioningStatus.DISABLED:
            return base
        try:
            if policy is AllocationPolicy.CUSTOM and needs_allocation(
                self.previous, spec.reprovision_policy
            ):
                return await self._by_webhook(enrollment, base)
            hub = choose_hub(
                enrollment, self.registration_id, self.previous, self.linked, policy, self.latency
            )
        except DpsError as err:
            return _failed(base, err)
        return self._assigned(enrollment, base, hub, self._reason(enrollment, policy, hub))

    async def _by_webhook(self, enrollment: Enrollment, base: Decision) -> Decision:
        request = custom_allocation_request(
            enrollment,
            self.instance,
            self.registration_id,
            enrollment.spec.attestation.type,
            self.previous,
            self.linked,
            self.payload,
            dry_run=True,
        )
        if self.allocator is None:
            raise DpsError(
                CUSTOM_ALLOCATION_FAILED, "Custom allocation is not enabled on this server."
            )
        try:
            answer = await _bounded(self.allocator, request, self.webhook_deadline_seconds)
        except DpsError as err:
            webhook = WebhookAnswer(error_code=err.error_code, error_message=err.message)
            return _failed(replace(base, webhook=webhook), err)
        webhook = WebhookAnswer(answer.hub.host_name, answer.initial_twin, answer.payload)
        decision = self._assigned(
            enrollment,
            replace(base, webhook=webhook),
            answer.hub,
            "custom: the webhook chose this hub (answer to a dry-run request).",
        )
        if answer.initial_twin is not None:
            # The webhook's twin wins over the enrollment's and over migration (protocol.md §8).
            decision = replace(decision, initial_twin=answer.initial_twin)
        return decision

    def _assigned(
        self, enrollment: Enrollment, base: Decision, hub: LinkedHub, reason: str
    ) -> Decision:
        # device_id_for and plan_assignment read only the enrollment and registration ID.
        device = AttestedDevice(self.instance, self.registration_id, enrollment, ("", ""))
        device_id = device_id_for(device, self.previous)
        plan = plan_assignment(
            self.previous, enrollment.spec.reprovision_policy, hub.host_name, device_id
        )
        twin = enrollment.spec.initial_twin if plan.twin is TwinSource.INITIAL else None
        return replace(
            base,
            outcome=RegistrationStatus.ASSIGNED,
            reason=reason,
            hub=hub.host_name,
            device_id=device_id,
            initial_twin=twin,
            reprovisioning=Reprovisioning(
                plan.substatus, plan.twin.value, plan.remove_from_hub, plan.remove_device_id
            ),
        )

    def _reason(self, enrollment: Enrollment, policy: AllocationPolicy, hub: LinkedHub) -> str:
        spec = enrollment.spec
        if not needs_allocation(self.previous, spec.reprovision_policy):
            return (
                "The device keeps its current hub: the reprovision policy has "
                "updateHubAssignment false."
            )
        candidates = candidate_hubs(self.linked, _names(spec))
        where = "the enrollment's hubs" if _names(spec) else "linked hubs applying the policy"
        if policy is AllocationPolicy.STATIC:
            if _names(spec):
                return "static: the hub the enrollment names."
            return "static: the only candidate hub."
        if policy is AllocationPolicy.GEO_LATENCY:
            region = self.latency.node_region
            if region is None:
                return (
                    "geoLatency without a configured node region: every hub is equally near, "
                    f"so weighted hashing chose among {len(candidates)} candidates ({where})."
                )
            millis = self.latency.latency_to(hub.location)
            return (
                f"geoLatency: nearest to this node's region {region} ({millis:g} ms); hubs at "
                "equal latency are chosen between by weighted hashing."
            )
        weighted = [h for h in candidates if h.allocation_weight > 0]
        total = sum(h.allocation_weight for h in weighted)
        score = hub_score(self.registration_id, hub)
        return (
            f"hashed: weighted rendezvous hashing of the registration ID over {len(weighted)} "
            f"candidates ({where}); this hub has weight {hub.allocation_weight} of {total} and "
            f"the highest score ({score:.4g}), the same for every registration of this ID."
        )


async def _bounded(
    allocator: CustomAllocator, request: CustomAllocationRequest, deadline_seconds: float
) -> CustomAllocation:
    try:
        # The allocator bounds its own call; this is the engine's guarantee of an end.
        async with asyncio.timeout(deadline_seconds):
            return await allocator.allocate(request)
    except TimeoutError:
        raise DpsError(
            CUSTOM_ALLOCATION_TIMEOUT, "Custom allocation webhook did not answer in time."
        ) from None


def _names(spec: EnrollmentSpec) -> tuple[str, ...]:
    return enrollment_hub_names(spec)


def _failed(base: Decision, err: DpsError) -> Decision:
    return replace(
        base,
        outcome=RegistrationStatus.FAILED,
        reason="The registration would fail: " + err.message,
        error_code=err.error_code,
        error_message=err.message,
    )
