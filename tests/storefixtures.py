"""Real stores for tests: a fresh SQLite file, or an emptied PostgreSQL database (STYLE §3.4 habit 10).

Any test folder can build its own `store` fixture from `make_store`:

    from tests.storefixtures import STORE_PARAMS, make_store

    @pytest.fixture(params=STORE_PARAMS)
    async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
        async with make_store(request.param, tmp_path) as store:
            yield store

SQLite: a new database file in `tmp_path` for every store.
PostgreSQL (127.0.0.1:5432, user `postgres`, trust auth; point OPENDPS_TEST_POSTGRES_URL at
another server's database from which that user may CREATE DATABASE): one database
`opendps_test_<random>` per test session, created and migrated on first use, emptied
(DELETE) before each store is handed out, and dropped when the session ends. Creating a
database per test costs ~0.5 s; emptying one costs ~20 ms. Tests that need a database of their
own (migrations, schema tampering) pass `fresh_database=True` or use `postgres_database()`.
When PostgreSQL is unreachable the calling test is skipped with the reason, never faked.
The `sample_*` builders give complete, valid records.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    EnrollmentGroup,
    EnrollmentSpec,
    IndividualEnrollment,
    SymmetricKeyAttestation,
)
from opendps.model.hub import AllocationPolicy, HubKind, LinkedHub
from opendps.model.instance import ALL_RIGHTS, OWNER_POLICY_NAME, AccessPolicy, Instance
from opendps.model.registration import RegistrationState, RegistrationStatus
from opendps.store import tables
from opendps.store.postgres import open_postgres_store
from opendps.store.sql import SqlStore
from opendps.store.sqlite import open_sqlite_store

STORE_KINDS = ("sqlite", "postgres")
# The same, as fixture params: PostgreSQL runs carry the `postgres` marker (`-m "not postgres"`).
STORE_PARAMS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
POSTGRES_ADMIN_URL = os.environ.get(
    "OPENDPS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# A local server answers in milliseconds; waiting longer only slows down a run without one.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 3.0
# A fixed moment for records, so tests compare timestamps exactly.
T0 = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)

_postgres_unreachable: list[str] = []  # the first failure's reason, remembered for the session
_session_database: list[str] = []  # URL of this session's shared database, once created


@asynccontextmanager
async def make_store(
    kind: str, tmp_path: Path, *, fresh_database: bool = False
) -> AsyncIterator[SqlStore]:
    """A migrated, empty store of `kind` ("sqlite" or "postgres"), closed after use."""
    if kind == "sqlite":
        store = await open_sqlite_store(tmp_path / "opendps.db")
    elif kind == "postgres" and fresh_database:
        async with postgres_database() as url:
            store = await open_postgres_store(url, pool_size=4)
            try:
                yield store
            finally:
                await store.close()
            return
    elif kind == "postgres":
        store = await open_postgres_store(await _session_database_url(), pool_size=4)
        await _empty(store)
    else:
        raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test; yields its postgresql:// URL."""
    name = await _create_database()
    try:
        yield _url_of(name)
    finally:
        await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _url_of(database: str) -> str:
    return (
        sa.make_url(POSTGRES_ADMIN_URL).set(database=database).render_as_string(hide_password=False)
    )


async def _create_database() -> str:
    name = f"opendps_test_{secrets.token_hex(6)}"
    await _admin_execute(f'CREATE DATABASE "{name}"')
    return name


async def _session_database_url() -> str:
    if not _session_database:
        name = await _create_database()
        _session_database.append(_url_of(name))
        atexit.register(_drop_at_exit, name)
    return _session_database[0]


def _drop_at_exit(name: str) -> None:
    """Runs after pytest finishes, on an event loop of its own; a server gone by then is ignored."""

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=POSTGRES_CONNECT_TIMEOUT_SECONDS)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    try:
        asyncio.run(drop())
    except (OSError, TimeoutError, asyncpg.PostgresError):
        pass


async def _empty(store: SqlStore) -> None:
    """Remove every row a previous test left (the schema and its revision stay).

    DELETE rather than TRUNCATE: on tables this small it is ~10x faster (TRUNCATE swaps files).
    """
    async with store.engine.begin() as conn:
        for table in reversed(tables.metadata.sorted_tables):
            await conn.execute(table.delete())


async def _admin_execute(sql: str) -> None:
    if _postgres_unreachable:
        pytest.skip(_postgres_unreachable[0])
    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=POSTGRES_CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        _postgres_unreachable.append(f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {error!r}")
        pytest.skip(_postgres_unreachable[0])
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# -- complete sample records -------------------------------------------------------------------
def sample_instance(name: str = "contoso", *, id_scope: str = "0ne00000001") -> Instance:
    return Instance(
        id=f"inst-{name.lower()}",
        name=name,
        id_scope=id_scope,
        service_host_name=f"{name.lower()}.example.net",
        allocation_policy=AllocationPolicy.HASHED,
        custom_allocation=None,
        etag='"instance-1"',
        created_at=T0,
        updated_at=T0,
    )


def sample_policy(instance_id: str, name: str = OWNER_POLICY_NAME) -> AccessPolicy:
    return AccessPolicy(
        instance_id=instance_id,
        name=name,
        primary_key="cHJpbWFyeQ==",
        secondary_key="c2Vjb25kYXJ5",
        rights=ALL_RIGHTS,
    )


def sample_hub(instance_id: str, host_name: str = "hub-1.example.net") -> LinkedHub:
    return LinkedHub(
        instance_id=instance_id,
        host_name=host_name,
        kind=HubKind.BUILTIN,
        connection={"sharedAccessKey": "aHViLWtleQ=="},
        etag='"hub-1"',
        created_at=T0,
        updated_at=T0,
    )


def symmetric_spec() -> EnrollmentSpec:
    return EnrollmentSpec(
        attestation=Attestation(
            type=AttestationType.SYMMETRIC_KEY,
            symmetric_key=SymmetricKeyAttestation(primary_key="a2V5LTE=", secondary_key="a2V5LTI="),
        )
    )


def sample_enrollment(
    instance_id: str, registration_id: str, *, etag: str = '"e-1"', at: datetime = T0
) -> IndividualEnrollment:
    return IndividualEnrollment(
        instance_id=instance_id,
        registration_id=registration_id,
        spec=symmetric_spec(),
        etag=etag,
        created_at=at,
        updated_at=at,
    )


def sample_group(
    instance_id: str, group_id: str, *, etag: str = '"g-1"', at: datetime = T0
) -> EnrollmentGroup:
    return EnrollmentGroup(
        instance_id=instance_id,
        enrollment_group_id=group_id,
        spec=symmetric_spec(),
        etag=etag,
        created_at=at,
        updated_at=at,
    )


def sample_registration(
    instance_id: str,
    registration_id: str,
    *,
    group_id: str | None = None,
    etag: str = '"r-1"',
    at: datetime = T0,
) -> RegistrationState:
    return RegistrationState(
        instance_id=instance_id,
        registration_id=registration_id,
        attestation_type=AttestationType.SYMMETRIC_KEY,
        status=RegistrationStatus.ASSIGNED,
        enrollment_group_id=group_id,
        assigned_hub="hub-1.example.net",
        device_id=registration_id,
        etag=etag,
        created_at=at,
        updated_at=at,
    )
