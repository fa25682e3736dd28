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
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from opendps.store.dialect import MIGRATION_OPTION, SINGLE_READ_OPTION, WRITE_OPTION, SqlDialect
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

# Connections of the async engine (migrations, bulk tools, anything using `SqlStore.engine`).
# Each aiosqlite connection is a thread plus an open file; one made past the pool (an "overflow"
# connection) is opened, set up (the pragmas above) and closed again for a single transaction,
# which under load cost more server CPU than the registration it served (docs/performance.md).
POOL_SIZE = 32
POOL_OVERFLOW = 32

# Threads (each with its own pooled connection) that run SqlStore's transactions. A transaction
# is a synchronous function (sql.py's `*_txn`); run whole in one of these threads it costs one
# hand-off to a thread and back, where the async driver pays one per cursor call (five for a
# one-row read, about 35 per registration). SQLite has one writer at a time (the write slot)
# and readers are short, so a few threads keep two cores busy; more transactions queue here.
TRANSACTION_THREADS = 4

R = TypeVar("R")


class SqliteDialect(SqlDialect):
    name = "sqlite"

    def __init__(self) -> None:
        self._write_lock = asyncio.Lock()
        self._sync_engine: Engine | None = None
        self._threads: ThreadPoolExecutor | None = None

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

    async def run_transaction(
        self, engine: AsyncEngine, options: Mapping[str, bool], call: Callable[[Connection], R]
    ) -> R:
        """Run the whole transaction in one of TRANSACTION_THREADS, on the same database file
        with the same connection settings and BEGIN rules as the async engine."""
        sync_engine, threads = self._sync(engine)

        def run() -> R:
            with sync_engine.connect() as conn:
                conn.execution_options(**options)
                with conn.begin():
                    return call(conn)

        # A caller cancelled meanwhile stops waiting; the transaction itself runs to its end
        # (as a statement already sent to the database would).
        return await asyncio.get_running_loop().run_in_executor(threads, run)

    async def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
            self._sync_engine = None

    def _sync(self, engine: AsyncEngine) -> tuple[Engine, ThreadPoolExecutor]:
        if self._sync_engine is None or self._threads is None:
            self._sync_engine = create_thread_engine(engine.url)
            self._threads = ThreadPoolExecutor(TRANSACTION_THREADS, "opendps-sqlite")
        return self._sync_engine, self._threads


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


def _on_reset(dbapi_connection: Any, _record: Any, _reset_state: Any) -> None:
    # `in_transaction` is SQLite's own autocommit flag (for aiosqlite, read without a trip to
    # its thread). A connection returned inside a transaction is rolled back as before.
    driver_connection = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    if driver_connection.in_transaction:
        dbapi_connection.rollback()


def _on_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    if options.get(MIGRATION_OPTION):
        # Batch migrations rebuild tables (create new, copy, drop old); with foreign keys on,
        # dropping `instances` would cascade-delete every child row. The migration connection
        # is discarded afterwards (migrate.upgrade_to_head), so the setting never leaks.
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    writing = options.get(WRITE_OPTION) or options.get(MIGRATION_OPTION)
    if not writing and options.get(SINGLE_READ_OPTION):
        # One SELECT in autocommit mode reads one snapshot by itself; BEGIN would only add a
        # statement (three trips to the connection's thread) to every such read.
        return
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def create_sqlite_engine(path: Path) -> tuple[AsyncEngine, SqliteDialect]:
    """An engine on the database file at `path` with the OpenDPS connection settings installed."""
    url = sa.URL.create("sqlite+aiosqlite", database=str(path))
    # hide_parameters: SQL errors must not carry enrollment keys or hub credentials into logs.
    # pool_reset_on_return=None + _on_reset: the pool's rollback on every check-in is a round trip
    # to the connection's thread; it is only needed when a transaction is still open (every
    # SqlStore transaction has already committed or rolled back when its connection returns).
    engine = create_async_engine(
        url,
        hide_parameters=True,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_reset_on_return=None,
    )
    event.listen(engine.sync_engine, "reset", _on_reset)
    dialect = SqliteDialect()
    dialect.install(engine)
    return engine, dialect


def create_thread_engine(url: sa.URL) -> Engine:
    """A synchronous engine (the standard library's sqlite3) on the async engine's database, for
    SqliteDialect.run_transaction. Its connections move between the transaction threads, one
    thread at a time (pool checkout), hence check_same_thread=False."""
    engine = sa.create_engine(
        url.set(drivername="sqlite+pysqlite"),
        hide_parameters=True,
        pool_size=TRANSACTION_THREADS,
        max_overflow=0,  # the threads bound the connections in use
        pool_reset_on_return=None,
        connect_args={"check_same_thread": False},
    )
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    event.listen(engine, "reset", _on_reset)
    return engine


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
