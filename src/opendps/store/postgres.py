"""The PostgreSQL backend: a pooled asyncpg engine shared by every OpenDPS node.

Transactions run at READ COMMITTED; the store's conditional writes are single statements
(`INSERT … ON CONFLICT`, `UPDATE … WHERE etag = …`), which PostgreSQL re-checks against the
latest row version, so no explicit row locks are needed. Deadlocks and serialization failures
roll back and are retried by the store (`is_retryable`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from opendps.store.dialect import MIGRATION_OPTION, SqlDialect
from opendps.store.revisions import upgrade_to_head
from opendps.store.sql import SqlStore

# Nodes starting together must migrate one after the other: the first takes this
# transaction-scoped advisory lock (the bytes of "OpenDPS"), the others wait and then find
# the schema already current.
MIGRATION_LOCK_ID = int.from_bytes(b"OpenDPS", "big")
# SQLSTATEs after which the transaction was rolled back and may simply run again.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_FOREIGN_KEY_VIOLATION = "23503"
_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+asyncpg"})


def _sqlstate(error: sa.exc.DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)


class PostgresDialect(SqlDialect):
    name = "postgresql"

    def install(self, engine: AsyncEngine) -> None:
        event.listen(engine.sync_engine, "begin", _on_begin)

    def conflict_insert(self, table: sa.Table) -> postgresql.Insert:
        return postgresql.insert(table)

    def is_retryable(self, error: sa.exc.DBAPIError) -> bool:
        return _sqlstate(error) in _RETRYABLE_SQLSTATES

    def is_foreign_key_violation(self, error: sa.exc.IntegrityError) -> bool:
        return _sqlstate(error) == _FOREIGN_KEY_VIOLATION


def _on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(MIGRATION_OPTION):
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")


def asyncpg_url(url: str) -> tuple[sa.URL, dict[str, str]]:
    """`postgresql://user@host:port/db` as an asyncpg URL, plus asyncpg connect arguments.

    libpq's `sslmode` query parameter becomes asyncpg's `ssl` argument (same values).
    """
    parsed = sa.make_url(url)
    if parsed.drivername not in _SCHEMES:
        raise ValueError(
            f"not a PostgreSQL URL (scheme {parsed.drivername!r}); expected postgresql://"
        )
    query = dict(parsed.query)
    connect_args: dict[str, str] = {}
    sslmode = query.pop("sslmode", None)
    if isinstance(sslmode, str):
        connect_args["ssl"] = sslmode
    converted = parsed.set(drivername="postgresql+asyncpg", query=query)
    return converted, connect_args


def create_postgres_engine(url: str, *, pool_size: int = 10) -> tuple[AsyncEngine, PostgresDialect]:
    """A pooled engine for `url` with the OpenDPS connection settings installed."""
    converted, connect_args = asyncpg_url(url)
    engine = create_async_engine(
        converted,
        connect_args=connect_args,
        pool_size=pool_size,
        # A fixed pool: beyond it, transactions queue in-process instead of piling onto the server.
        max_overflow=0,
        # Nodes outlive database restarts and failovers: test a pooled connection before use.
        pool_pre_ping=True,
        # SQL errors must not carry enrollment keys or hub credentials into logs.
        hide_parameters=True,
    )
    dialect = PostgresDialect()
    dialect.install(engine)
    return engine, dialect


async def open_postgres_store(url: str, *, pool_size: int = 10) -> SqlStore:
    """Connect to PostgreSQL at `url` and migrate its schema to the current one.

    Raises revisions.SchemaTooNewError if a newer OpenDPS already upgraded the database.
    """
    engine, dialect = create_postgres_engine(url, pool_size=pool_size)
    try:
        await upgrade_to_head(engine)
    except BaseException:
        await engine.dispose()
        raise
    return SqlStore(engine, dialect)
