"""Rich renderings of API answers for people (`--json` prints the answers themselves)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def _text(value: Any) -> str:
    """A value as plain text (rendered as `Text`, never as markup: values may hold brackets)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_text(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def field(name: str) -> Callable[[Mapping[str, Any]], Any]:
    """A column reading `item[name]` (dotted names read nested objects)."""

    def read(item: Mapping[str, Any]) -> Any:
        value: Any = item
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    return read


def table(
    items: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, empty: str
) -> Table | str:
    """One row per item; `empty` when there is none."""
    if not items:
        return empty
    rendered = Table(box=None, pad_edge=False, header_style="bold")
    for title, _ in columns:
        rendered.add_column(title, overflow="fold")
    for item in items:
        rendered.add_row(*(Text(_text(read(item))) for _, read in columns))
    return rendered


def details(item: Mapping[str, Any], rows: Sequence[Column]) -> Table:
    """Two columns: a label and a value per row (empty values are left out)."""
    rendered = Table(show_header=False, box=None, pad_edge=False)
    rendered.add_column(style="bold")
    rendered.add_column(overflow="fold")
    for label, read in rows:
        value = _text(read(item))
        if value:
            rendered.add_row(label, Text(value))
    return rendered
