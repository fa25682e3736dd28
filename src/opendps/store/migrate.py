"""Schema migrations from the command line; `upgrade_to_head` for code that opens a store.

    python -m opendps.store.migrate upgrade --database URL
    python -m opendps.store.migrate check [--database URL]
    python -m opendps.store.migrate revision --message "add widgets"

Exit status 0 = fine, 1 = problem (drift, database not at head, schema too new), 2 = usage.
URL is `postgresql://user@host:port/db`, `sqlite:///path/to/file.db` or a plain file path.
`check` compares tables.py with what the migrations build, using alembic's autogenerate
comparison: without --database it migrates a scratch SQLite file; with one, that database must
already be at the head revision (`upgrade` it first) and is only read. `revision` drafts the
next numbered revision from the difference; review and edit it before committing.

The migration logic itself is in `revisions.py` (re-exported here); this module adds the
command line, which needs both backends.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from alembic import command
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from opendps.store.postgres import create_postgres_engine
from opendps.store.revisions import (
    SchemaTooNewError,
    alembic_config,
    check_drift,
    code_head,
    upgrade_to_head,
)
from opendps.store.sqlite import create_sqlite_engine

__all__ = ["SchemaTooNewError", "main", "upgrade_to_head"]


def _say(line: str, *, error: bool = False) -> None:
    (sys.stderr if error else sys.stdout).write(line + "\n")


def _engine_for(database: str) -> AsyncEngine:
    if database.startswith(("postgresql:", "postgres:", "postgresql+asyncpg:")):
        return create_postgres_engine(database, pool_size=1)[0]
    path = database.removeprefix("sqlite+aiosqlite:///").removeprefix("sqlite:///")
    return create_sqlite_engine(Path(path))[0]


async def _with_engine(database: str, action: Callable[[AsyncEngine], Awaitable[int]]) -> int:
    engine = _engine_for(database)
    try:
        return await action(engine)
    finally:
        await engine.dispose()


async def _upgrade_command(engine: AsyncEngine) -> int:
    await upgrade_to_head(engine)
    _say(f"schema at revision {code_head()}")
    return 0


async def _check_command(engine: AsyncEngine) -> int:
    drift = await check_drift(engine)
    for line in drift:
        _say(f"drift: {line}", error=True)
    if drift:
        _say(
            "tables.py and the migrations disagree: add or fix a revision (docs/database.md)",
            error=True,
        )
        return 1
    _say(f"no drift: tables.py matches the migrations at revision {code_head()}")
    return 0


def _next_revision_id() -> str:
    return f"{int(code_head()) + 1:04d}"


def _revision_txn(conn: Connection, message: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = conn
    command.revision(config, message=message, autogenerate=True, rev_id=_next_revision_id())


async def _revision_command(engine: AsyncEngine, message: str) -> int:
    async with engine.connect() as conn:
        await conn.run_sync(_revision_txn, message)
    return 0


async def _scratch(action: Callable[[AsyncEngine], Awaitable[int]]) -> int:
    """Run `action` against a fresh SQLite database migrated to head."""
    with tempfile.TemporaryDirectory(prefix="opendps-migrate-") as scratch:
        database = str(Path(scratch) / "scratch.db")

        async def migrated(engine: AsyncEngine) -> int:
            await upgrade_to_head(engine)
            return await action(engine)

        return await _with_engine(database, migrated)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m opendps.store.migrate", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    upgrade = commands.add_parser("upgrade", help="apply pending migrations")
    upgrade.add_argument("--database", required=True, help="postgresql://… URL or SQLite file path")
    check = commands.add_parser(
        "check", help="fail (exit 1) when tables.py and the migrations differ"
    )
    check.add_argument(
        "--database", help="a database at head to compare (default: a scratch SQLite file)"
    )
    revision = commands.add_parser(
        "revision", help="draft the next revision from tables.py (review it!)"
    )
    revision.add_argument("--message", "-m", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "upgrade":
            return asyncio.run(_with_engine(args.database, _upgrade_command))
        if args.command == "check":
            if args.database is None:
                return asyncio.run(_scratch(_check_command))
            return asyncio.run(_with_engine(args.database, _check_command))
        return asyncio.run(_scratch(lambda engine: _revision_command(engine, args.message)))
    except SchemaTooNewError as error:
        _say(f"error: {error}", error=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
