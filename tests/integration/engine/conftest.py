from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.integration.engine.world import ID_SCOPE, World
from tests.storefixtures import STORE_PARAMS, make_store
from tests.unit.engine.manual_clock import ManualClock

from opendps.model.hub import AllocationPolicy
from opendps.model.instance import Instance
from opendps.store.interface import Store

# Tokens are signed for "now" on this clock, so it starts near the real time of the test vectors.
START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=STORE_PARAMS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The engine runs on both databases: its reads and conditional writes must behave alike."""
    async with make_store(request.param, tmp_path) as opened:
        yield opened


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
