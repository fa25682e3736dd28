"""Bulk import of individual enrollments."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest
from tests.storefixtures import T0, sample_enrollment

from opendps.model.errors import INSTANCE_NOT_FOUND, DpsError
from opendps.model.instance import Instance
from opendps.store.sql import SqlStore

LATER = T0 + timedelta(days=1)


async def test_importing_ten_thousand_enrollments_stores_each_once(
    store: SqlStore, instance: Instance
) -> None:
    enrollments = [sample_enrollment(instance.id, f"Bulk-{n:05d}") for n in range(10_000)]
    started = time.perf_counter()
    assert await store.import_individual_enrollments(enrollments) == 10_000
    elapsed = time.perf_counter() - started
    assert await store.count_individual_enrollments(instance.id) == 10_000
    assert await store.get_individual_enrollment(instance.id, "bulk-04321") == enrollments[4321]
    # Loose ceiling (the real target is 1,000,000 in 60 s): catches a row-at-a-time regression.
    assert elapsed < 10, f"import of 10,000 took {elapsed:.1f} s"


async def test_reimport_replaces_and_keeps_created_at(store: SqlStore, instance: Instance) -> None:
    first = [sample_enrollment(instance.id, f"dev-{n}") for n in range(5)]
    await store.import_individual_enrollments(first)
    second = [
        dataclasses.replace(e, device_id="new", etag='"e-2"', created_at=LATER, updated_at=LATER)
        for e in first
    ]
    assert await store.import_individual_enrollments(second) == 5
    stored = await store.get_individual_enrollment(instance.id, "dev-3")
    assert stored == dataclasses.replace(second[3], created_at=T0)


async def test_an_id_given_twice_is_written_once_with_the_later_record(
    store: SqlStore, instance: Instance
) -> None:
    earlier = sample_enrollment(instance.id, "Twice", etag='"first"')
    later = sample_enrollment(instance.id, "TWICE", etag='"second"')
    assert await store.import_individual_enrollments([earlier, later]) == 1
    assert await store.get_individual_enrollment(instance.id, "twice") == later


async def test_importing_nothing_writes_nothing(store: SqlStore, instance: Instance) -> None:
    assert await store.import_individual_enrollments([]) == 0


async def test_import_into_several_instances_keeps_them_apart(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    mixed = [
        sample_enrollment(instance.id, "dev-1"),
        sample_enrollment(other_instance.id, "dev-1"),
        sample_enrollment(other_instance.id, "dev-2"),
    ]
    assert await store.import_individual_enrollments(mixed) == 3
    assert await store.count_individual_enrollments(instance.id) == 1
    assert await store.count_individual_enrollments(other_instance.id) == 2


async def test_import_naming_a_missing_instance_writes_nothing_and_is_404(
    store: SqlStore, instance: Instance
) -> None:
    batch = [sample_enrollment(instance.id, "dev-1"), sample_enrollment("inst-ghost", "dev-2")]
    with pytest.raises(DpsError) as error:
        await store.import_individual_enrollments(batch)
    assert error.value.error_code == INSTANCE_NOT_FOUND
    assert "inst-ghost" in error.value.message
    assert await store.count_individual_enrollments(instance.id) == 0
