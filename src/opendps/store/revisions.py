"""Alembic revisions in a database: apply them on start, refuse unknown ones, compare with tables.py.

The schema is defined once in `tables.py`; `migrations/versions/NNNN_<verb>_<noun>.py` are the
alembic revisions that build it step by step (docs/database.md says how to add one). Every
store opens through `upgrade_to_head`, as Synapse's `prepare_database` does
(synapse/storage/prepare_database.py), and refuses to run against a schema written by a newer
OpenDPS (Synapse's SCHEMA_COMPAT_VERSION rule: an old binary must not guess at new tables).

This module names no backend, so both backends can import it and stay independent of each
other; the command line that needs both lives in `migrate.py`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from opendps.observability.logging import log_event
from opendps.store.dialect import MIGRATION_OPTION, WRITE_OPTION
from opendps.store.tables import metadata

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer OpenDPS than this one."""


def alembic_config() -> Config:
    """Alembic settings, built in code: OpenDPS ships no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Revision files are named by their sequential id: versions/0002_add_widgets.py.
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    return config


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def code_head() -> str:
    """The newest revision this code knows."""
    head = _script().get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def database_heads(conn: Connection) -> tuple[str, ...]:
    """The revisions recorded in the database (empty for a fresh database)."""
    return tuple(MigrationContext.configure(conn).get_current_heads())


def refuse_newer_schema_txn(conn: Connection) -> None:
    """Raise SchemaTooNewError if the database records a revision this code does not know."""
    script = _script()
    for revision in database_heads(conn):
        try:
            known = script.get_revision(revision)
        except CommandError:
            known = None
        if known is None:
            raise SchemaTooNewError(
                f"The database schema is at revision {revision!r}, which this OpenDPS does not know "
                f"(its newest is {code_head()!r}): a newer OpenDPS has upgraded this database. "
                "Run that newer version, or restore a backup taken before the upgrade."
            )


def _upgrade_txn(conn: Connection) -> None:
    refuse_newer_schema_txn(conn)
    before = database_heads(conn)
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, "head")
    after = database_heads(conn)
    if before != after:
        log_event(
            logger,
            logging.INFO,
            "store.schema.upgraded",
            dialect=conn.dialect.name,
            before=",".join(before) or "empty",
            after=",".join(after),
        )


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Apply every pending migration in one transaction; no-op when already current.

    Raises SchemaTooNewError when the database is newer than this code. The connection used
    is discarded afterwards: the dialect may have changed its session settings for the
    migration (SQLite turns foreign keys off, see sqlite.py).
    """
    async with engine.connect() as conn:
        await conn.execution_options(**{MIGRATION_OPTION: True, WRITE_OPTION: True})
        try:
            async with conn.begin():
                await conn.run_sync(_upgrade_txn)
        finally:
            await conn.invalidate()


def drift_txn(conn: Connection, target: MetaData = metadata) -> list[str]:
    """Differences between `target` (tables.py) and the database, which must be at the head revision."""
    heads = database_heads(conn)
    head = code_head()
    if heads != (head,):
        shown = ",".join(heads) or "empty"
        return [
            f"database is at revision {shown}, the migrations' head is {head}: run `upgrade` first"
        ]
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return [_describe(diff) for diff in compare_metadata(context, target)]


def _describe(diff: Any) -> str:
    # compare_metadata yields tuples ("add_table", Table) or lists of ("modify_*", ...) tuples.
    if isinstance(diff, list):
        return "; ".join(_describe(part) for part in diff)
    return " ".join(
        _name_of(part) for part in diff if part is not None and not isinstance(part, dict)
    )


def _name_of(part: Any) -> str:
    if isinstance(part, sa.Column):
        return f"{part.table.name}.{part.name}"
    name = getattr(part, "name", None)
    return str(name) if isinstance(name, str) else str(part)


async def check_drift(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(drift_txn)
