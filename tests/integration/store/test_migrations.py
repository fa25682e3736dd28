"""Migrations: upgrade from empty, no drift between tables.py and the revisions, newer schemas refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.storefixtures import STORE_PARAMS, make_store, postgres_database

from opendps.store import migrate, revisions, tables
from opendps.store.postgres import asyncpg_url, open_postgres_store
from opendps.store.revisions import SchemaTooNewError, code_head, drift_txn
from opendps.store.sql import SqlStore
from opendps.store.sqlite import open_sqlite_store


@pytest.fixture(params=STORE_PARAMS)
async def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """A store on a database of its own, created empty and migrated on open."""
    async with make_store(request.param, tmp_path, fresh_database=True) as opened:
        yield opened


async def _reopen(store: SqlStore, tmp_path: Path, url: str) -> SqlStore:
    if store.dialect.name == "sqlite":
        return await open_sqlite_store(tmp_path / "opendps.db")
    return await open_postgres_store(url, pool_size=1)


def _url_of(store: SqlStore) -> str:
    return store.engine.url.render_as_string(hide_password=False).replace("+asyncpg", "")


async def test_an_empty_database_is_upgraded_to_the_head_revision_with_every_table(
    fresh: SqlStore,
) -> None:
    async with fresh.engine.connect() as conn:
        heads = await conn.run_sync(revisions.database_heads)
        names = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
    assert heads == (code_head(),)
    assert names == set(tables.metadata.tables) | {"alembic_version"}


async def test_the_migrated_schema_has_no_drift_from_tables_py(fresh: SqlStore) -> None:
    async with fresh.engine.connect() as conn:
        assert await conn.run_sync(drift_txn) == []


async def test_a_column_missing_from_the_migrations_is_reported_as_drift(fresh: SqlStore) -> None:
    changed = sa.MetaData(naming_convention=tables.NAMING_CONVENTION)
    for table in tables.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["meters"].append_column(sa.Column("unit", sa.Text, nullable=True))
    sa.Index("ix_meters_kind", changed.tables["meters"].c.kind)
    async with fresh.engine.connect() as conn:
        drift = await conn.run_sync(drift_txn, changed)
    assert drift == ["add_column meters meters.unit", "add_index ix_meters_kind"]


async def test_reopening_a_current_database_changes_nothing(
    fresh: SqlStore, tmp_path: Path
) -> None:
    reopened = await _reopen(fresh, tmp_path, _url_of(fresh))
    try:
        async with reopened.engine.connect() as conn:
            assert await conn.run_sync(revisions.database_heads) == (code_head(),)
    finally:
        await reopened.close()


async def test_a_database_from_a_newer_opendps_is_refused_with_a_clear_error(
    fresh: SqlStore, tmp_path: Path
) -> None:
    async with fresh.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    url = _url_of(fresh)
    await fresh.close()
    with pytest.raises(SchemaTooNewError, match=r"revision '9999'.*newer OpenDPS"):
        await _reopen(fresh, tmp_path, url)


async def test_sqlite_connections_use_wal_full_sync_and_foreign_keys(tmp_path: Path) -> None:
    store = await open_sqlite_store(tmp_path / "opendps.db")
    try:
        async with store.engine.connect() as conn:
            values = [
                (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            ]
    finally:
        await store.close()
    assert values == ["wal", 2, 1, 5000]  # synchronous 2 = FULL


def test_postgres_urls_are_converted_to_the_asyncpg_driver() -> None:
    url, connect_args = asyncpg_url(
        "postgresql://dps:s3cret@db.internal:6432/opendps?sslmode=require"
    )
    assert url.drivername == "postgresql+asyncpg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "dps",
        "s3cret",
        "db.internal",
        6432,
        "opendps",
    )
    assert connect_args == {"ssl": "require"} and "sslmode" not in url.query
    assert asyncpg_url("postgres://u@h/d")[0].drivername == "postgresql+asyncpg"
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        asyncpg_url("mysql://u@h/d")


# -- the command line (synchronous: it runs its own event loop) ----------------------------------
def test_check_without_a_database_migrates_a_scratch_file_and_finds_no_drift(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert migrate.main(["check"]) == 0
    assert "no drift" in capsys.readouterr().out


def test_upgrade_then_check_on_a_sqlite_file_succeed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = str(tmp_path / "cli.db")
    assert migrate.main(["check", "--database", database]) == 1
    assert "run `upgrade` first" in capsys.readouterr().err
    assert migrate.main(["upgrade", "--database", database]) == 0
    assert migrate.main(["check", "--database", f"sqlite:///{database}"]) == 0


@pytest.mark.postgres
async def test_upgrade_then_check_on_postgres_succeed(capsys: pytest.CaptureFixture[str]) -> None:
    async with postgres_database() as url:
        # The CLI runs its own event loop, so it goes to a worker thread here.
        assert await asyncio.to_thread(migrate.main, ["upgrade", "--database", url]) == 0
        assert await asyncio.to_thread(migrate.main, ["check", "--database", url]) == 0
    assert "no drift" in capsys.readouterr().out


@pytest.mark.postgres
async def test_two_nodes_migrating_one_empty_postgres_database_at_once_both_start() -> None:
    async with postgres_database() as url:
        stores = await asyncio.gather(
            open_postgres_store(url, pool_size=1), open_postgres_store(url, pool_size=1)
        )
        try:
            async with stores[1].engine.connect() as conn:
                assert await conn.run_sync(revisions.database_heads) == (code_head(),)
        finally:
            for opened in stores:
                await opened.close()


async def test_two_stores_opening_one_new_sqlite_file_at_once_both_start(tmp_path: Path) -> None:
    stores = await asyncio.gather(*(open_sqlite_store(tmp_path / "shared.db") for _ in range(2)))
    for opened in stores:
        await opened.close()
