"""The SQLite backend: one database file in WAL mode, durable commits, one writer at a time.

SQLite lets many readers run beside one writer (WAL). Writers would otherwise contend for the
file lock and fail with SQLITE_BUSY, so write transactions queue on an in-process lock and
start with `BEGIN IMMEDIATE` (taking the write lock up front rather than on the first write,
which is where deferred transactions deadlock). The pysqlite driver's own implicit BEGIN is
turned off so that reads run in real transactions too (SQLAlchemy's SQLite documentation,
"Enabling Non-Legacy SQLite Transactional Modes").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from opendps.store.dialect import MIGRATION_OPTION, WRITE_OPTION, SqlDialect
from opendps.store.revisions import upgrade_to_head
from opendps.store.sql import SqlStore

# How long a connection waits for another process's write lock (or a WAL checkpoint) before
# failing with SQLITE_BUSY; within one process writers already queue on the asyncio lock.
BUSY_TIMEOUT_MS = 5000

# Per-connection settings. synchronous=FULL fsyncs the WAL on every commit: a registration or
# enrollment acknowledged to a client survives power loss (NORMAL could lose the last commits).
_PRAGMAS = (
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
)


class SqliteDialect(SqlDialect):
    name = "sqlite"

    def __init__(self) -> None:
        self._write_lock = asyncio.Lock()

    def install(self, engine: AsyncEngine) -> None:
        event.listen(engine.sync_engine, "connect", _on_connect)
        event.listen(engine.sync_engine, "begin", _on_begin)

    def conflict_insert(self, table: sa.Table) -> sqlite.Insert:
        return sqlite.insert(table)

    def is_retryable(self, error: sa.exc.DBAPIError) -> bool:
        # Another process held the file past the busy timeout; nothing was written.
        name = getattr(error.orig, "sqlite_errorname", "")
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))

    def is_foreign_key_violation(self, error: sa.exc.IntegrityError) -> bool:
        return getattr(error.orig, "sqlite_errorname", "") == "SQLITE_CONSTRAINT_FOREIGNKEY"

    @contextlib.asynccontextmanager
    async def write_slot(self) -> AsyncIterator[None]:
        async with self._write_lock:
            yield


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # We issue BEGIN ourselves (_on_begin); the driver's legacy implicit BEGIN is switched off.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        mode = cursor.fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(
                f"SQLite refused WAL journal mode (got {mode!r}); is the file on a network share?"
            )
        for pragma in _PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    if options.get(MIGRATION_OPTION):
        # Batch migrations rebuild tables (create new, copy, drop old); with foreign keys on,
        # dropping `instances` would cascade-delete every child row. The migration connection
        # is discarded afterwards (migrate.upgrade_to_head), so the setting never leaks.
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    writing = options.get(WRITE_OPTION) or options.get(MIGRATION_OPTION)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def create_sqlite_engine(path: Path) -> tuple[AsyncEngine, SqliteDialect]:
    """An engine on the database file at `path` with the OpenDPS connection settings installed."""
    url = sa.URL.create("sqlite+aiosqlite", database=str(path))
    # hide_parameters: SQL errors must not carry enrollment keys or hub credentials into logs.
    engine = create_async_engine(url, hide_parameters=True)
    dialect = SqliteDialect()
    dialect.install(engine)
    return engine, dialect


async def open_sqlite_store(path: Path) -> SqlStore:
    """Open (creating if needed) the SQLite database at `path`, migrated to the current schema.

    Raises revisions.SchemaTooNewError if a newer OpenDPS already upgraded the database.
    """
    engine, dialect = create_sqlite_engine(path)
    try:
        await upgrade_to_head(engine)
    except BaseException:
        await engine.dispose()
        raise
    return SqlStore(engine, dialect)
