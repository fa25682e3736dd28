"""Pruning of operations and expired TPM challenges (app/maintenance.py), on both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.storefixtures import STORE_PARAMS, make_store, sample_instance
from tests.unit.engine.manual_clock import ManualClock

from opendps.app import maintenance
from opendps.app.maintenance import prune_once
from opendps.model.registration import Operation, RegistrationStatus
from opendps.model.tpm import TpmChallenge
from opendps.store.interface import Store

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = 86_400.0


@pytest.fixture(params=STORE_PARAMS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with make_store(request.param, tmp_path) as opened:
        yield opened


def operation(instance_id: str, operation_id: str, updated_at: datetime) -> Operation:
    return Operation(
        operation_id, instance_id, "dev-1", RegistrationStatus.ASSIGNED, updated_at, updated_at
    )


def challenge(instance_id: str, registration_id: str, expires_at: datetime) -> TpmChallenge:
    return TpmChallenge(
        instance_id=instance_id,
        registration_id=registration_id,
        challenge_id=registration_id,
        endorsement_key=b"ek",
        storage_root_key=b"srk",
        key=bytes(32),
        created_at=expires_at - timedelta(minutes=10),
        expires_at=expires_at,
    )


async def test_old_operations_and_expired_challenges_go_the_rest_stays(store: Store) -> None:
    instance = await store.create_instance(sample_instance(), [], [])
    await store.put_operation(operation(instance.id, "old", NOW - timedelta(days=2)))
    await store.put_operation(operation(instance.id, "recent", NOW - timedelta(hours=1)))
    await store.put_tpm_challenge(challenge(instance.id, "expired", NOW - timedelta(seconds=1)))
    await store.put_tpm_challenge(challenge(instance.id, "pending", NOW + timedelta(minutes=5)))

    pruned = await prune_once(store, ManualClock(NOW), operation_retention_seconds=DAY)

    assert (pruned.operations, pruned.tpm_challenges) == (1, 1)
    assert await store.get_operation(instance.id, "old") is None
    assert await store.get_operation(instance.id, "recent") is not None
    assert await store.get_tpm_challenge(instance.id, "expired") is None
    assert await store.get_tpm_challenge(instance.id, "pending") is not None


async def test_pruning_continues_past_one_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "PRUNE_BATCH_ROWS", 2)
    instance = await store.create_instance(sample_instance(), [], [])
    for number in range(5):
        await store.put_operation(operation(instance.id, f"old-{number}", NOW - timedelta(days=3)))

    pruned = await prune_once(store, ManualClock(NOW), operation_retention_seconds=DAY)

    assert pruned.operations == 5
    assert all([await store.get_operation(instance.id, f"old-{n}") is None for n in range(5)])
