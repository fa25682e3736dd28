"""The `store` fixture: every test here runs once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.storefixtures import STORE_PARAMS, make_store, sample_hub, sample_instance, sample_policy

from opendps.model.instance import Instance
from opendps.store.sql import SqlStore


@pytest.fixture(params=STORE_PARAMS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    async with make_store(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
async def instance(store: SqlStore) -> Instance:
    """An instance named "contoso" with its owner policy and one linked hub."""
    created = sample_instance("contoso", id_scope="0ne00000001")
    return await store.create_instance(
        created, [sample_policy(created.id)], [sample_hub(created.id)]
    )


@pytest.fixture
async def other_instance(store: SqlStore) -> Instance:
    """A second tenant, for isolation tests."""
    created = sample_instance("fabrikam", id_scope="0ne00000002")
    return await store.create_instance(created, [sample_policy(created.id)], [])
