"""`opendps audit`: the audit log of administrative changes, newest first."""

from __future__ import annotations

from typing import Annotated

import typer

from opendps.cli.options import Invocation, operator_command
from opendps.cli.output import field, table

_COLUMNS = [
    ("ID", field("id")),
    ("At", field("at")),
    ("Instance", field("instance")),
    ("Actor", field("actor")),
    ("Action", field("action")),
    ("Target", field("target")),
]


def add_audit_command(app: typer.Typer) -> None:
    @operator_command(app, "audit")
    def audit(
        invocation: Invocation,
        limit: Annotated[int, typer.Option(help="Entries to show.", min=1)] = 50,
        before: Annotated[
            int | None,
            typer.Option(help="Only entries older than this ID (paging).", show_default=False),
        ] = None,
    ) -> None:
        """Show who changed what (every instance with the admin key; --instance for one)."""
        query = {"limit": str(limit)}
        if before is not None:
            query["before"] = str(before)
        if invocation.options.instance is not None:
            query["instance"] = invocation.options.instance
        page = invocation.client.admin("GET", "/audit", query=query)
        invocation.emit(
            page, lambda answer: table(answer["value"], _COLUMNS, empty="No audit entries.")
        )
