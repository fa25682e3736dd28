from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from tests.integration.engine.world import ID_SCOPE, World
from tests.unit.engine.manual_clock import ManualClock

from opendps.model.hub import AllocationPolicy
from opendps.model.instance import Instance
from opendps.store.interface import Store
from opendps.store.sqlite import open_sqlite_store

# Tokens are signed for "now" on this clock, so it starts near the real time of the test vectors.
START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[Store]:  # type: ignore[no-untyped-def]
    opened = await open_sqlite_store(tmp_path / "opendps.db")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def world(store: Store) -> World:
    clock = ManualClock(START)
    instance = Instance(
        id="inst-1",
        name="default",
        id_scope=ID_SCOPE,
        service_host_name="dps.example.net",
        allocation_policy=AllocationPolicy.HASHED,
        custom_allocation=None,
        etag='"i1"',
        created_at=START,
        updated_at=START,
    )
    created = await store.create_instance(instance, [], [])
    return World(store, clock, created)
