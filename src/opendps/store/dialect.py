"""What differs between SQLite and PostgreSQL, and nothing else (STYLE §3.4 habit 7).

Modelled on Synapse's `BaseDatabaseEngine` (synapse/storage/engines/_base.py): the store in
`store/sql.py` is written once in portable SQLAlchemy Core and asks its dialect only for
- the INSERT construct that knows `ON CONFLICT` (upserts, insert-if-absent, counters),
- connection setup (pragmas, how BEGIN is issued) via `install(engine)`,
- whether a failed transaction may simply be run again (`is_retryable`),
- whether write transactions must queue in-process (`write_slot`).

The store marks each transaction with execution options before BEGIN; a dialect's `begin`
hook reads them: `WRITE_OPTION` (the transaction will write), `SINGLE_READ_OPTION` (a read of
one statement, which SQLite runs without BEGIN: one SELECT is already a consistent snapshot) and
`MIGRATION_OPTION` (schema migration: SQLite turns foreign keys off so batch table rebuilds
cannot cascade-delete; PostgreSQL takes an advisory lock so two nodes starting together migrate
one after the other).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

WRITE_OPTION = "opendps_write"
SINGLE_READ_OPTION = "opendps_single_read"
MIGRATION_OPTION = "opendps_migration"

ConflictInsert = sqlite.Insert | postgresql.Insert
R = TypeVar("R")


class SqlDialect:
    """Base class: the portable defaults. Subclasses live in store/sqlite.py and postgres.py."""

    name: str = "generic"

    def install(self, engine: AsyncEngine) -> None:
        """Register connect/begin hooks on a newly created engine (before first use)."""

    def conflict_insert(self, table: sa.Table) -> ConflictInsert:
        """An INSERT construct supporting `on_conflict_do_*` (both dialects share that API)."""
        raise NotImplementedError

    def is_retryable(self, error: sa.exc.DBAPIError) -> bool:
        """True when the transaction failed only because of concurrency and was rolled back."""
        return False

    def is_foreign_key_violation(self, error: sa.exc.IntegrityError) -> bool:
        """True when a row named a parent (an instance) that does not exist."""
        return False

    @contextlib.asynccontextmanager
    async def write_slot(self) -> AsyncIterator[None]:
        """Held around every write transaction; the default lets writers run concurrently."""
        yield

    async def run_transaction(
        self, engine: AsyncEngine, options: Mapping[str, bool], call: Callable[[Connection], R]
    ) -> R:
        """Run `call` on a connection inside one transaction begun with `options`; commit.

        The default bridges the async engine (SQLAlchemy's greenlet adapter). A dialect may run
        the whole synchronous `call` elsewhere (SQLite: in a thread, see store/sqlite.py).
        """
        async with engine.connect() as conn:
            await conn.execution_options(**options)
            async with conn.begin():
                return await conn.run_sync(call)

    async def close(self) -> None:
        """Release what `run_transaction` holds besides the engine (called by SqlStore.close)."""

    # -- built on conflict_insert ------------------------------------------------------------
    def upsert(self, table: sa.Table, *, keys: Sequence[str], update: Sequence[str]) -> sa.Insert:
        """INSERT, or on a key conflict overwrite `update` columns (others keep stored values)."""
        stmt = self.conflict_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=list(keys), set_={name: stmt.excluded[name] for name in update}
        )

    def insert_absent(self, table: sa.Table, *, keys: Sequence[str] | None) -> sa.Insert:
        """INSERT that does nothing when the key exists (check the RETURNING rows).

        `keys=None` means a conflict on any unique constraint.
        """
        index_elements = None if keys is None else list(keys)
        return self.conflict_insert(table).on_conflict_do_nothing(index_elements=index_elements)

    def increment(self, table: sa.Table, *, keys: Sequence[str], column: str) -> sa.Insert:
        """INSERT a counter row, or add the inserted amount to the stored one."""
        stmt = self.conflict_insert(table)
        added: Any = table.c[column] + stmt.excluded[column]
        return stmt.on_conflict_do_update(index_elements=list(keys), set_={column: added})
