"""People-facing renderings: values are shown literally, never read as rich markup."""

from __future__ import annotations

from rich.console import Console

from opendps.cli.output import details, field, table


def _render(renderable: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_values_with_brackets_are_printed_as_they_are() -> None:
    item = {
        "name": "[bold]x[/bold]",
        "twin": {"tags": {"list": [1, 2]}},
        "flag": True,
        "hubs": ["a", "b"],
    }
    text = _render(details(item, [("Name", field("name")), ("Twin", field("twin")), ("Flag", field("flag")),
                                  ("Hubs", field("hubs"))]))  # fmt: skip
    assert "[bold]x[/bold]" in text
    assert '{"tags": {"list": [1, 2]}}' in text
    assert "yes" in text and "a, b" in text


def test_tables_read_nested_fields_and_say_when_empty() -> None:
    rows = [{"a": {"b": "deep"}}, {"a": None}]
    assert "deep" in _render(table(rows, [("B", field("a.b"))], empty="none"))
    assert table([], [("B", field("a.b"))], empty="Nothing here.") == "Nothing here."


def test_empty_values_are_left_out_of_details() -> None:
    assert "Device" not in _render(details({"deviceId": None}, [("Device", field("deviceId"))]))
