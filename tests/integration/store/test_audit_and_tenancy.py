"""Audit log, metering counters, and what deleting an instance takes with it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest
from tests.storefixtures import (
    T0,
    sample_enrollment,
    sample_group,
    sample_hub,
    sample_policy,
    sample_registration,
)

from opendps.model.audit import AuditEntry, MeterCount, MeterKind
from opendps.model.certificate import CaCertificate
from opendps.model.device import DeviceAuthKind, HubDevice
from opendps.model.errors import INSTANCE_NOT_FOUND, DpsError
from opendps.model.instance import Instance
from opendps.model.registration import Operation, RegistrationStatus
from opendps.store.sql import SqlStore

DAY = date(2024, 5, 1)


def _entry(instance_id: str | None, n: int) -> AuditEntry:
    return AuditEntry(
        at=T0 + timedelta(seconds=n),
        instance_id=instance_id,
        actor="admin",
        action="enrollment.create",
        target=f"enrollments/dev-{n}",
    )


async def test_audit_is_listed_newest_first_in_pages(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    for n in range(7):
        await store.append_audit(_entry(instance.id, n))
        await store.append_audit(_entry(other_instance.id, n))
    await store.append_audit(_entry(None, 99))

    first = await store.list_audit(instance_id=instance.id, before_id=None, limit=3)
    assert [e.target for e in first] == [
        "enrollments/dev-6",
        "enrollments/dev-5",
        "enrollments/dev-4",
    ]
    assert all(e.id is not None for e in first)
    ids = [e.id for e in first if e.id is not None]
    assert ids == sorted(ids, reverse=True)
    second = await store.list_audit(instance_id=instance.id, before_id=ids[-1], limit=3)
    third = await store.list_audit(instance_id=instance.id, before_id=second[-1].id, limit=3)
    assert [e.target for e in second + third] == [f"enrollments/dev-{n}" for n in (3, 2, 1, 0)]
    assert first[0] == dataclasses.replace(_entry(instance.id, 6), id=first[0].id)

    everything = await store.list_audit(instance_id=None, before_id=None, limit=100)
    assert len(everything) == 15
    assert everything[0].instance_id is None and everything[0].target == "enrollments/dev-99"


async def test_meter_increments_accumulate_per_instance_day_and_kind(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    await store.add_meter(instance.id, DAY, MeterKind.REGISTRATION)
    await store.add_meter(instance.id, DAY, MeterKind.REGISTRATION, 4)
    await store.add_meter(instance.id, DAY, MeterKind.ENROLLMENT_CHANGE, 2)
    await store.add_meter(instance.id, DAY + timedelta(days=1), MeterKind.REGISTRATION)
    await store.add_meter(other_instance.id, DAY, MeterKind.REGISTRATION, 10)
    assert await store.list_meters(instance.id) == [
        MeterCount(instance.id, DAY, MeterKind.ENROLLMENT_CHANGE, 2),
        MeterCount(instance.id, DAY, MeterKind.REGISTRATION, 5),
        MeterCount(instance.id, DAY + timedelta(days=1), MeterKind.REGISTRATION, 1),
    ]
    assert await store.list_meters(instance.id, since=DAY + timedelta(days=1)) == [
        MeterCount(instance.id, DAY + timedelta(days=1), MeterKind.REGISTRATION, 1)
    ]
    assert await store.list_meters(other_instance.id) == [
        MeterCount(other_instance.id, DAY, MeterKind.REGISTRATION, 10)
    ]


async def test_metering_a_missing_instance_is_404(store: SqlStore) -> None:
    with pytest.raises(DpsError) as error:
        await store.add_meter("inst-ghost", DAY, MeterKind.REGISTRATION)
    assert error.value.error_code == INSTANCE_NOT_FOUND


async def _fill(store: SqlStore, instance_id: str) -> None:
    await store.put_access_policy(sample_policy(instance_id, "reader"))
    await store.put_linked_hub(sample_hub(instance_id, "hub-2.example.net"))
    await store.put_individual_enrollment(sample_enrollment(instance_id, "dev-1"), if_match=None)
    await store.put_enrollment_group(sample_group(instance_id, "group-1"), if_match=None)
    await store.put_registration_state(
        sample_registration(instance_id, "dev-1", group_id="group-1")
    )
    await store.put_operation(
        Operation("op-1", instance_id, "dev-1", RegistrationStatus.ASSIGNED, T0, T0)
    )
    await store.put_ca_certificate(
        CaCertificate(
            instance_id,
            "root",
            "pem",
            "CN=root",
            "a",
            "b",
            T0,
            T0 + timedelta(days=1),
            True,
            etag='"c"',
            created_at=T0,
            updated_at=T0,
        ),
        if_match=None,
    )
    await store.put_hub_device(
        HubDevice(
            f"hub-{instance_id}.example.net",
            "dev-1",
            instance_id,
            DeviceAuthKind.SAS,
            etag='"d"',
            created_at=T0,
            updated_at=T0,
        )
    )
    await store.add_meter(instance_id, DAY, MeterKind.REGISTRATION)
    await store.append_audit(
        AuditEntry(
            datetime(2024, 5, 1, tzinfo=UTC), instance_id, "admin", "instance.delete", "instances/x"
        )
    )


async def _owned(store: SqlStore, instance_id: str) -> list[object]:
    return [
        await store.list_access_policies(instance_id),
        await store.list_linked_hubs(instance_id),
        await store.get_individual_enrollment(instance_id, "dev-1"),
        await store.get_enrollment_group(instance_id, "group-1"),
        await store.get_registration_state(instance_id, "dev-1"),
        (
            await store.list_registration_states_by_group(
                instance_id, "group-1", after=None, limit=5
            )
        ).items,
        await store.get_operation(instance_id, "op-1"),
        await store.list_ca_certificates(instance_id),
        await store.get_hub_device(f"hub-{instance_id}.example.net", "dev-1"),
        await store.list_meters(instance_id),
    ]


async def test_deleting_an_instance_removes_everything_it_owns_and_nothing_else(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    await _fill(store, instance.id)
    await _fill(store, other_instance.id)
    others_before = await _owned(store, other_instance.id)
    assert all(others_before)

    assert await store.delete_instance(instance.id) is True

    assert await store.get_instance(instance.id) is None
    assert await _owned(store, instance.id) == [[], [], None, None, None, [], None, [], None, []]
    assert await store.count_individual_enrollments(instance.id) == 0
    assert await _owned(store, other_instance.id) == others_before
    # The audit trail outlives the instance it records.
    assert len(await store.list_audit(instance_id=instance.id, before_id=None, limit=10)) == 1
