"""`engine.explain.check_webhook`: the save-time dry run of a custom webhook, without sockets."""

from __future__ import annotations

from datetime import UTC, datetime

from opendps.allocation.select import CustomAllocation, CustomAllocationRequest
from opendps.engine.explain import DRY_RUN_GROUP_ID, DRY_RUN_REGISTRATION_ID, check_webhook
from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    CustomAllocationDefinition,
    EnrollmentSpec,
    IndividualEnrollment,
)
from opendps.model.errors import CUSTOM_ALLOCATION_FAILED, DpsError
from opendps.model.hub import AllocationPolicy, HubKind, LinkedHub
from opendps.model.instance import Instance

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WEBHOOK = CustomAllocationDefinition("https://alloc.example/api?code=k", "2021-10-01")
INSTANCE = Instance(
    id="i-1",
    name="default",
    id_scope="0ne0000000A",
    service_host_name="localhost",
    allocation_policy=AllocationPolicy.CUSTOM,
    custom_allocation=WEBHOOK,
    etag='"i"',
    created_at=T0,
    updated_at=T0,
)
HUB = LinkedHub("i-1", "hub-1.example.net", HubKind.BUILTIN)


class RecordingAllocator:
    def __init__(self, failure: DpsError | None = None) -> None:
        self.requests: list[CustomAllocationRequest] = []
        self.failure = failure

    async def allocate(self, request: CustomAllocationRequest) -> CustomAllocation:
        self.requests.append(request)
        if self.failure is not None:
            raise self.failure
        return CustomAllocation(hub=request.candidates[0])


async def test_the_instance_webhook_is_called_once_as_a_dry_run_with_a_placeholder_group() -> None:
    allocator = RecordingAllocator()
    assert await check_webhook(allocator, INSTANCE, [HUB], None) is None
    [request] = allocator.requests
    assert request.dry_run is True
    assert request.registration_id == DRY_RUN_REGISTRATION_ID
    assert getattr(request.enrollment, "enrollment_group_id", None) == DRY_RUN_GROUP_ID
    assert request.candidates == (HUB,)


async def test_an_individual_enrollment_is_checked_with_its_own_registration_id() -> None:
    allocator = RecordingAllocator()
    spec = EnrollmentSpec(
        Attestation(AttestationType.SYMMETRIC_KEY),
        allocation_policy=AllocationPolicy.CUSTOM,
        custom_allocation=WEBHOOK,
    )
    enrollment = IndividualEnrollment("i-1", "sensor-7", spec)
    assert await check_webhook(allocator, INSTANCE, [HUB], enrollment) is None
    assert allocator.requests[0].registration_id == "sensor-7"


async def test_a_failing_webhook_is_a_warning_with_its_error_code() -> None:
    failure = DpsError(CUSTOM_ALLOCATION_FAILED, "Custom allocation webhook answered HTTP 401.")
    warning = await check_webhook(RecordingAllocator(failure), INSTANCE, [HUB], None)
    assert warning is not None
    assert "HTTP 401" in warning and "500210" in warning


async def test_no_candidate_hub_is_a_warning_and_the_webhook_is_not_called() -> None:
    allocator = RecordingAllocator()
    warning = await check_webhook(allocator, INSTANCE, [], None)
    assert warning is not None and "400208" in warning
    assert allocator.requests == []


async def test_without_a_webhook_client_nothing_is_checked() -> None:
    assert await check_webhook(None, INSTANCE, [HUB], None) is None
