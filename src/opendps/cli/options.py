"""The options every operator command takes, and running a command with them.

`@operator_command(group, "name")` gives a function the connection options of cli/client.py
and `--json`, hands it an `Invocation` (the client, opened on first use, and the output mode),
and turns every failure into one red line on stderr and exit code 1. The options are added to
the function's signature the way cli/main.py adds the serve options, so Typer sees ordinary
parameters and each command's own arguments stay in its own signature.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console, RenderableType
from rich.markup import escape

from opendps.app.config import DEFAULT_DATA_DIR
from opendps.cli.client import Client, CliError, ConnectionOptions, open_client

EXIT_FAILURE = 1

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class Invocation:
    """What a command body receives: its connection and how to print."""

    options: ConnectionOptions
    json_output: bool
    console: Console = field(default_factory=Console)
    _client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = open_client(self.options)
        return self._client

    def emit(self, data: Any, render: Callable[[Any], RenderableType]) -> None:
        """Print `data` as JSON (`--json`) or as `render(data)` for people."""
        if self.json_output:
            typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            self.console.print(render(data), highlight=False)

    def done(self, message: str, data: Any = None) -> None:
        """Report a change without an object to show (`--json` prints `data` or `{}`)."""
        if self.json_output:
            typer.echo(json.dumps(data if data is not None else {}, indent=2))
        else:
            self.console.print(message, highlight=False, markup=False)


_CONNECTION_PARAMETERS = [
    inspect.Parameter(
        "connection_string",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--connection-string",
                envvar="OPENDPS_CONNECTION_STRING",
                help="Service connection string of an access policy.",
                show_default=False,
                rich_help_panel="Connection",
            ),
        ],
    ),
    inspect.Parameter(
        "data_dir",
        inspect.Parameter.KEYWORD_ONLY,
        default=DEFAULT_DATA_DIR,
        annotation=Annotated[
            Path,
            typer.Option(
                "--data-dir",
                envvar="OPENDPS_DATA_DIR",
                help="Data dir of a local server: endpoint, CA and admin key.",
                rich_help_panel="Connection",
            ),
        ],
    ),
    inspect.Parameter(
        "instance",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--instance",
                envvar="OPENDPS_INSTANCE",
                help="Instance to address instead of the default one.",
                show_default=False,
                rich_help_panel="Connection",
            ),
        ],
    ),
    inspect.Parameter(
        "endpoint",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--endpoint",
                envvar="OPENDPS_ENDPOINT",
                help="Server URL, when the connection string's host name does not reach it.",
                show_default=False,
                rich_help_panel="Connection",
            ),
        ],
    ),
    inspect.Parameter(
        "ca_certificate",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--ca-certificate",
                envvar="OPENDPS_CA_CERTIFICATE",
                help="CA file to trust for TLS (default: the data dir's dev CA).",
                show_default=False,
                dir_okay=False,
                rich_help_panel="Connection",
            ),
        ],
    ),
]

_JSON_PARAMETER = inspect.Parameter(
    "json_output",
    inspect.Parameter.KEYWORD_ONLY,
    default=False,
    annotation=Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")],
)


def operator_command(group: typer.Typer, name: str, *, connected: bool = True) -> Callable[[F], F]:
    """Register `function(invocation, ...)` as `group name` with the common options."""

    def register(function: F) -> F:
        own = list(inspect.signature(function, eval_str=True).parameters.values())[1:]
        extra = [*(_CONNECTION_PARAMETERS if connected else []), _JSON_PARAMETER]

        @functools.wraps(function)
        def command(**values: Any) -> None:
            invocation = Invocation(
                options=_connection_options(values) if connected else ConnectionOptions(),
                json_output=values.pop("json_output"),
            )
            try:
                function(invocation, **values)
            except CliError as err:
                Console(stderr=True).print(
                    f"[bold red]error:[/] {escape(str(err))}", highlight=False
                )
                raise typer.Exit(EXIT_FAILURE) from None

        command.__signature__ = inspect.Signature([*own, *extra])  # type: ignore[attr-defined]
        group.command(name)(command)
        return function

    return register


def _connection_options(values: dict[str, Any]) -> ConnectionOptions:
    return ConnectionOptions(
        connection_string=values.pop("connection_string"),
        data_dir=values.pop("data_dir"),
        instance=values.pop("instance"),
        endpoint=values.pop("endpoint"),
        ca_certificate=values.pop("ca_certificate"),
    )
