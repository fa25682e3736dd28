"""Alembic environment for OpenDPS: always runs on a connection handed in by opendps.store.migrate.

Migrations run inside the caller's transaction (one transaction for the whole upgrade, so a
failed upgrade leaves the previous schema intact) and in batch mode on SQLite, whose ALTER
TABLE cannot change columns or constraints (alembic rebuilds the table instead).
"""

from __future__ import annotations

from alembic import context

from opendps.store.tables import metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "OpenDPS migrations run through `python -m opendps.store.migrate upgrade --database URL` "
            "(or on store start), not the bare alembic command."
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
