from __future__ import annotations

import itertools

import pytest

from opendps.engine.reprovision import (
    MAX_PREVIOUS_HUBS,
    TwinSource,
    needs_allocation,
    plan_assignment,
)
from opendps.model.enrollment import AttestationType, ReprovisionPolicy
from opendps.model.registration import RegistrationState, RegistrationStatus, Substatus

POLICIES = [ReprovisionPolicy(u, m) for u, m in itertools.product([True, False], repeat=2)]


def state(
    hub: str | None,
    *,
    history: tuple[str, ...] = (),
    status: RegistrationStatus = RegistrationStatus.ASSIGNED,
    substatus: Substatus | None = Substatus.INITIAL_ASSIGNMENT,
    device_id: str = "dev",
) -> RegistrationState:
    return RegistrationState(
        "inst",
        "dev",
        AttestationType.SYMMETRIC_KEY,
        status,
        assigned_hub=hub,
        device_id=device_id,
        substatus=substatus,
        previous_hubs=history,
    )


@pytest.mark.parametrize("policy", POLICIES)
def test_first_registration_is_an_initial_assignment_with_the_initial_twin(
    policy: ReprovisionPolicy,
) -> None:
    assert needs_allocation(None, policy)
    plan = plan_assignment(None, policy, "a", "dev")
    assert (plan.substatus, plan.twin, plan.remove_from_hub, plan.previous_hubs) == (
        Substatus.INITIAL_ASSIGNMENT,
        TwinSource.INITIAL,
        None,
        (),
    )


@pytest.mark.parametrize("policy", POLICIES)
def test_a_failed_first_registration_counts_as_no_previous_hub(policy: ReprovisionPolicy) -> None:
    failed = state(None, status=RegistrationStatus.FAILED, substatus=None)
    assert needs_allocation(failed, policy)
    assert plan_assignment(failed, policy, "a", "dev").substatus is Substatus.INITIAL_ASSIGNMENT


def test_update_hub_assignment_false_never_reallocates() -> None:
    assert not needs_allocation(state("a"), ReprovisionPolicy(False, True))
    assert not needs_allocation(state("a"), ReprovisionPolicy(False, False))
    assert needs_allocation(state("a"), ReprovisionPolicy(True, False))


@pytest.mark.parametrize("policy", POLICIES)
def test_staying_on_the_same_hub_keeps_twin_substatus_and_entry(policy: ReprovisionPolicy) -> None:
    plan = plan_assignment(
        state("Hub-A", substatus=Substatus.DEVICE_DATA_MIGRATED), policy, "hub-a", "dev"
    )
    assert plan.substatus is Substatus.DEVICE_DATA_MIGRATED
    assert plan.twin is TwinSource.KEEP
    assert plan.remove_from_hub is None


def test_moving_with_migration_copies_the_twin_and_removes_the_old_entry() -> None:
    plan = plan_assignment(state("a"), ReprovisionPolicy(True, True), "b", "dev")
    assert (plan.substatus, plan.twin, plan.remove_from_hub, plan.remove_device_id) == (
        Substatus.DEVICE_DATA_MIGRATED,
        TwinSource.MIGRATE,
        "a",
        "dev",
    )
    assert plan.previous_hubs == ("a",)


def test_moving_without_migration_resets_to_the_initial_twin() -> None:
    plan = plan_assignment(state("a"), ReprovisionPolicy(True, False), "b", "dev")
    assert (plan.substatus, plan.twin, plan.remove_from_hub) == (
        Substatus.DEVICE_DATA_RESET,
        TwinSource.INITIAL,
        "a",
    )


@pytest.mark.parametrize("migrate", [True, False])
def test_moving_back_to_an_earlier_hub_is_reprovisioned_to_initial_assignment(
    migrate: bool,
) -> None:
    plan = plan_assignment(state("b", history=("A",)), ReprovisionPolicy(True, migrate), "a", "dev")
    assert plan.substatus is Substatus.REPROVISIONED_TO_INITIAL_ASSIGNMENT
    assert plan.twin is (TwinSource.MIGRATE if migrate else TwinSource.INITIAL)
    assert plan.remove_from_hub == "b"
    assert plan.previous_hubs == ("b",)


def test_a_new_device_id_on_the_same_hub_removes_the_old_entry() -> None:
    plan = plan_assignment(state("a", device_id="old-id"), ReprovisionPolicy(), "a", "new-id")
    assert (plan.remove_from_hub, plan.remove_device_id, plan.twin) == (
        "a",
        "old-id",
        TwinSource.KEEP,
    )


def test_disabled_or_failed_states_keep_their_hub_for_reprovisioning() -> None:
    for status in (
        RegistrationStatus.DISABLED,
        RegistrationStatus.FAILED,
        RegistrationStatus.ASSIGNING,
    ):
        plan = plan_assignment(
            state("a", status=status, substatus=None), ReprovisionPolicy(True, True), "b", "dev"
        )
        assert plan.substatus is Substatus.DEVICE_DATA_MIGRATED


def test_hub_history_is_bounded_and_deduplicated() -> None:
    history = tuple(f"h{n}" for n in range(MAX_PREVIOUS_HUBS))
    plan = plan_assignment(state("now", history=history), ReprovisionPolicy(), "fresh", "dev")
    assert len(plan.previous_hubs) == MAX_PREVIOUS_HUBS
    assert plan.previous_hubs[-1] == "now"
    again = plan_assignment(state("x", history=("a", "x", "b")), ReprovisionPolicy(), "c", "dev")
    assert again.previous_hubs == ("a", "b", "x")
