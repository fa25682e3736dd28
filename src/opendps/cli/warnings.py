"""Warnings the server returns with a successful save (a custom webhook's dry run failed).

The DPS service API sends them in the `x-opendps-warning` header, the admin API in a
`warnings` list (docs/allocation.md). They go to stderr, so `--json` output stays the answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape

from opendps.cli.client import Response

WARNING_HEADER = "x-opendps-warning"


def print_warnings(messages: Iterable[str]) -> None:
    console = Console(stderr=True)
    for message in messages:
        console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False)


def warn_from_response(response: Response) -> Any:
    """Print the response's warning header, if any; return its body."""
    warning = response.headers.get(WARNING_HEADER)
    if warning:
        print_warnings([warning])
    return response.body


def warn_from_body(body: Any) -> Any:
    """Print an admin answer's `warnings`, if any; return the body."""
    if isinstance(body, dict):
        print_warnings(str(item) for item in body.get("warnings") or [])
    return body
