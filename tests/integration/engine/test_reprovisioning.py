"""Re-provisioning on real hubs (protocol.md §7.3): every updateHubAssignment × migrateDeviceData
combination, with and without a hub change, checked on the hubs themselves."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from tests.integration.engine.world import World, symmetric_spec

from opendps.model.enrollment import ReprovisionPolicy
from opendps.model.hub import AllocationPolicy
from opendps.model.registration import RegistrationStatus, Substatus

A, B = "hub-a.example.net", "hub-b.example.net"
INITIAL_TWIN = {"tags": {"from": "enrollment"}, "properties": {"desired": {"mode": "initial"}}}


async def enroll(world: World, hub: str, policy: ReprovisionPolicy) -> None:
    spec = symmetric_spec(
        allocation_policy=AllocationPolicy.STATIC,
        iot_hubs=(hub,),
        initial_twin=INITIAL_TWIN,
        reprovision_policy=policy,
    )
    await world.add_individual("dev-1", spec)


async def operator_changes_twin_on(world: World, hub: str) -> None:
    device = await world.store.get_hub_device(hub, "dev-1")
    assert device is not None
    await world.store.put_hub_device(
        replace(
            device,
            tags={"from": "operator"},
            desired={"mode": "tuned"},
            desired_version=device.desired_version + 1,
        )
    )


@pytest.mark.parametrize("update, migrate", list(itertools.product([True, False], repeat=2)))
@pytest.mark.parametrize(
    "hub_changes", [True, False], ids=["enrollment-moves-to-b", "enrollment-stays-on-a"]
)
async def test_reprovision_matrix(
    world: World, update: bool, migrate: bool, hub_changes: bool
) -> None:
    await world.add_hub(A)
    await world.add_hub(B)
    policy = ReprovisionPolicy(update_hub_assignment=update, migrate_device_data=migrate)
    await enroll(world, A, policy)
    first = await world.register("dev-1")
    assert (
        first.registration is not None
        and first.registration.substatus is Substatus.INITIAL_ASSIGNMENT
    )
    await operator_changes_twin_on(world, A)
    await enroll(world, B if hub_changes else A, policy)

    again = await world.register("dev-1")

    assert again.status is RegistrationStatus.ASSIGNED and again.registration is not None
    moved = update and hub_changes
    new_hub = B if moved else A
    assert again.registration.assigned_hub == new_hub
    device = await world.store.get_hub_device(new_hub, "dev-1")
    assert device is not None
    if not moved:
        assert again.registration.substatus is Substatus.INITIAL_ASSIGNMENT
        assert (device.tags, device.desired) == ({"from": "operator"}, {"mode": "tuned"})  # kept
        assert await world.store.get_hub_device(B, "dev-1") is None
    elif migrate:
        assert again.registration.substatus is Substatus.DEVICE_DATA_MIGRATED
        assert (device.tags, device.desired) == ({"from": "operator"}, {"mode": "tuned"})
        assert await world.store.get_hub_device(A, "dev-1") is None
    else:
        assert again.registration.substatus is Substatus.DEVICE_DATA_RESET
        assert (device.tags, device.desired) == ({"from": "enrollment"}, {"mode": "initial"})
        assert await world.store.get_hub_device(A, "dev-1") is None


@pytest.mark.parametrize("migrate", [True, False])
async def test_moving_back_to_an_earlier_hub_is_reprovisioned_to_initial_assignment(
    world: World, migrate: bool
) -> None:
    await world.add_hub(A)
    await world.add_hub(B)
    policy = ReprovisionPolicy(True, migrate)
    await enroll(world, A, policy)
    await world.register("dev-1")
    await enroll(world, B, policy)
    await world.register("dev-1")
    await enroll(world, A, policy)
    back = await world.register("dev-1")
    assert back.registration is not None
    assert (back.registration.assigned_hub, back.registration.substatus) == (
        A,
        Substatus.REPROVISIONED_TO_INITIAL_ASSIGNMENT,
    )
    assert await world.store.get_hub_device(B, "dev-1") is None
    assert await world.store.get_hub_device(A, "dev-1") is not None


async def test_deleted_registration_state_makes_a_fresh_initial_assignment(world: World) -> None:
    await world.add_hub(A)
    await world.add_hub(B)
    await enroll(world, A, ReprovisionPolicy())
    await world.register("dev-1")
    await operator_changes_twin_on(world, A)
    assert await world.store.delete_registration_state(world.instance.id, "dev-1", if_match=None)
    await enroll(world, B, ReprovisionPolicy())
    fresh = await world.register("dev-1")
    assert fresh.registration is not None
    assert (fresh.registration.assigned_hub, fresh.registration.substatus) == (
        B,
        Substatus.INITIAL_ASSIGNMENT,
    )
    device = await world.store.get_hub_device(B, "dev-1")
    assert device is not None and device.tags == {"from": "enrollment"}
    # Like Azure, deleting the registration state does not touch the old hub's entry.
    assert await world.store.get_hub_device(A, "dev-1") is not None


async def test_a_device_whose_hub_was_unlinked_fails_when_it_may_not_move(world: World) -> None:
    await world.add_hub(A)
    await world.add_hub(B)
    await enroll(world, A, ReprovisionPolicy(update_hub_assignment=False))
    await world.register("dev-1")
    await world.remove_hub(A)
    result = await world.register("dev-1")
    assert result.status is RegistrationStatus.FAILED
    assert (
        result.registration is not None and result.registration.assigned_hub == A
    )  # still where it was


async def test_a_failed_re_registration_keeps_the_device_on_its_hub_for_the_next_one(
    world: World,
) -> None:
    await world.add_hub(A)
    await enroll(world, A, ReprovisionPolicy())
    await world.register("dev-1")
    await enroll(world, "gone.example.net", ReprovisionPolicy())
    failed = await world.register("dev-1")
    assert failed.status is RegistrationStatus.FAILED
    await world.add_hub(B)
    await enroll(world, B, ReprovisionPolicy())
    moved = await world.register("dev-1")
    assert (
        moved.registration is not None
        and moved.registration.substatus is Substatus.DEVICE_DATA_MIGRATED
    )
    assert await world.store.get_hub_device(A, "dev-1") is None
