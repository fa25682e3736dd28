"""record_registration: state + operation + meter in one transaction, shared by concurrent calls."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import date, timedelta
from typing import Any

import pytest
from tests.storefixtures import T0, sample_registration

from opendps.model.audit import MeterCount, MeterKind
from opendps.model.errors import INSTANCE_NOT_FOUND, DpsError
from opendps.model.instance import Instance
from opendps.model.registration import Operation, RegistrationState, RegistrationStatus
from opendps.store import sql
from opendps.store.sql import SqlStore

DAY = date(2024, 5, 1)
LATER = T0 + timedelta(seconds=30)


def _operation(state: RegistrationState, number: int) -> Operation:
    return Operation(
        operation_id=f"4.op-{number}",
        instance_id=state.instance_id,
        registration_id=state.registration_id,
        status=state.status,
        created_at=T0,
        updated_at=T0,
    )


async def test_one_registration_is_stored_like_the_three_single_writes(
    store: SqlStore, instance: Instance
) -> None:
    state = sample_registration(instance.id, "Dev-1")
    operation = _operation(state, 1)
    assert await store.record_registration(state, operation, meter_day=DAY) == state
    assert await store.get_registration_state(instance.id, "dev-1") == state
    assert await store.get_operation(instance.id, operation.operation_id) == operation
    assert await store.list_meters(instance.id) == [
        MeterCount(instance.id, DAY, MeterKind.REGISTRATION, 1)
    ]
    # A re-registration replaces the state but keeps its created_at, as put_registration_state.
    again = dataclasses.replace(state, status=RegistrationStatus.FAILED, created_at=LATER)
    stored = await store.record_registration(again, _operation(again, 2), meter_day=DAY)
    assert stored == dataclasses.replace(again, created_at=state.created_at)
    assert (await store.list_meters(instance.id))[0].count == 2


async def test_concurrent_registrations_share_transactions(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    states = [
        sample_registration(owner.id, f"dev-{number}")
        for number in range(20)
        for owner in (instance, other_instance)
    ]
    batches_before = store.registration_batches
    stored = await asyncio.gather(
        *(
            store.record_registration(state, _operation(state, number), meter_day=DAY)
            for number, state in enumerate(states)
        )
    )
    assert stored == states  # each caller gets its own stored state
    assert store.registration_batches - batches_before < len(states)
    for number, state in enumerate(states):
        assert await store.get_registration_state(state.instance_id, state.registration_id)
        assert await store.get_operation(state.instance_id, f"4.op-{number}") is not None
    for owner in (instance, other_instance):
        assert await store.list_meters(owner.id) == [
            MeterCount(owner.id, DAY, MeterKind.REGISTRATION, 20)
        ]


async def test_the_last_of_two_batched_writes_of_one_device_wins(
    store: SqlStore, instance: Instance
) -> None:
    first = sample_registration(instance.id, "dev-1")
    second = dataclasses.replace(first, status=RegistrationStatus.FAILED, created_at=LATER)
    results = await asyncio.gather(
        store.record_registration(first, _operation(first, 1), meter_day=DAY),
        store.record_registration(second, _operation(second, 2), meter_day=DAY),
    )
    assert results == [first, dataclasses.replace(second, created_at=first.created_at)]
    assert await store.get_registration_state(instance.id, "dev-1") == results[1]


async def test_a_failed_batch_fails_every_caller_and_writes_nothing(
    store: SqlStore, instance: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_meter(txn: sql.Txn, row: dict[str, Any]) -> None:
        # States and operations of the batch are written by now: the rollback must undo them.
        raise RuntimeError("disk full")

    monkeypatch.setattr(sql, "add_meter_txn", failing_meter)
    states = [sample_registration(instance.id, f"dev-{number}") for number in range(5)]
    batches_before = store.registration_batches
    outcomes = await asyncio.gather(
        *(
            store.record_registration(state, _operation(state, number), meter_day=DAY)
            for number, state in enumerate(states)
        ),
        return_exceptions=True,
    )
    assert store.registration_batches - batches_before < len(states)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes), outcomes
    for number, state in enumerate(states):
        assert await store.get_registration_state(instance.id, state.registration_id) is None
        assert await store.get_operation(instance.id, f"4.op-{number}") is None
    assert await store.list_meters(instance.id) == []


async def test_a_deleted_instance_fails_only_its_own_registrations(
    store: SqlStore, instance: Instance
) -> None:
    orphan = sample_registration("inst-ghost", "dev-orphan")
    kept = sample_registration(instance.id, "dev-kept")
    outcomes = await asyncio.gather(
        store.record_registration(orphan, _operation(orphan, 1), meter_day=DAY),
        store.record_registration(kept, _operation(kept, 2), meter_day=DAY),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], DpsError) and outcomes[0].error_code == INSTANCE_NOT_FOUND
    assert outcomes[1] == kept
    assert await store.get_registration_state(instance.id, "dev-kept") == kept
    assert await store.get_operation("inst-ghost", "4.op-1") is None
    with pytest.raises(DpsError) as alone:
        await store.record_registration(orphan, _operation(orphan, 3), meter_day=DAY)
    assert alone.value.error_code == INSTANCE_NOT_FOUND


async def test_the_operation_must_belong_to_the_registrations_instance(
    store: SqlStore, instance: Instance
) -> None:
    state = sample_registration(instance.id, "dev-1")
    stray = dataclasses.replace(_operation(state, 1), instance_id="inst-other")
    with pytest.raises(ValueError):
        await store.record_registration(state, stray, meter_day=DAY)
