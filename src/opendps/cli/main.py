"""The `opendps` command: `serve`, `status`, `--version`, and the command groups of cli.commands.

The options of `serve` are generated from the settings table (app/config.py): each row becomes
a flag whose help names its environment variable and default. Flags arrive as None when not
given, so that app.config can apply the precedence flag > environment > file > default.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.panel import Panel

from opendps import __version__
from opendps.app.config import (
    CONFIG_FILE_ENV,
    SETTINGS,
    SETTINGS_BY_NAME,
    ConfigError,
    Kind,
    Setting,
    Settings,
    load_settings,
)
from opendps.app.status import StatusError, is_process_alive, print_status, read_state
from opendps.cli.commands import add_commands
from opendps.observability.logging import configure_logging

if TYPE_CHECKING:
    from opendps.app.serve import RunningServerInfo

app = typer.Typer(
    name="opendps",
    help="OpenDPS: a self-hosted IoT Device Provisioning Service, wire-compatible with Azure DPS.",
    no_args_is_help=True,
    add_completion=False,
)

# Exit codes: 1 for a server that cannot start or run, 2 for invalid settings (like click).
EXIT_FAILURE = 1
EXIT_USAGE = 2

_PYTHON_TYPES: dict[Kind, Any] = {
    Kind.STR: str,
    Kind.INT: int,
    Kind.PORT: int,
    Kind.SECONDS: float,
    Kind.PATH: Path,
    Kind.STR_LIST: list[str],
}

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar=CONFIG_FILE_ENV,
        help="TOML config file whose keys are setting names (docs/configuration.md).",
        show_default=False,
        dir_okay=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opendps {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """OpenDPS: a self-hosted IoT Device Provisioning Service, wire-compatible with Azure DPS."""


def _option_help(setting: Setting) -> str:
    # Parentheses, not brackets: Typer's rich help would read `[...]` as markup.
    return f"{setting.help} (env {setting.env}; default: {setting.shown_default})"


def _setting_parameter(setting: Setting) -> inspect.Parameter:
    metavar = "|".join(setting.choices).upper() if setting.choices else None
    option = typer.Option(
        setting.flag, help=_option_help(setting), show_default=False, metavar=metavar
    )
    return inspect.Parameter(
        setting.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[_PYTHON_TYPES[setting.kind] | None, option],
    )


def _with_setting_options(function: Any, names: list[str]) -> Any:
    """Give `function(config, ..., **values)` one Typer option per named setting.

    The function's own keyword parameters (such as --config) stay; `**values` is replaced by
    the generated options, so Typer sees an ordinary signature.
    """
    own = [
        parameter
        for parameter in inspect.signature(function, eval_str=True).parameters.values()
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    generated = [_setting_parameter(SETTINGS_BY_NAME[name]) for name in names]
    function.__signature__ = inspect.Signature([*own, *generated])
    return function


def _load(values: dict[str, Any], config: Path | None) -> Settings:
    try:
        return load_settings(values, os.environ, config)
    except ConfigError as err:
        _fail(str(err), EXIT_USAGE)


def _fail(message: str, code: int) -> NoReturn:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _serve(*, config: ConfigOption = None, **values: Any) -> None:
    """Run the server: HTTPS (device, service and admin APIs), MQTT and AMQP listeners; one
    process, or --workers N processes sharing the ports.

    Creates the data dir on first start (SQLite database, dev CA, server certificate, admin
    key, default instance with its owner policy and built-in hub) and reuses it afterwards.
    """
    # The server stack (aiohttp, SQLAlchemy, alembic: about a second of imports) loads only
    # here, so `status` and the other commands start fast.
    from opendps.app.serve import main as run_server
    from opendps.app.wiring import StartupError

    settings = _load(values, config)
    configure_logging(settings.log_level, settings.log_format)
    try:
        code = run_server(settings, on_ready=_print_banner)
    except StartupError as err:
        _fail(str(err), EXIT_FAILURE)
    raise typer.Exit(code)


def _print_banner(info: RunningServerInfo) -> None:
    console = Console()
    for fallback in info.fallbacks:
        console.print(
            Panel(
                f"{fallback}\nSet the port explicitly to choose another one.",
                title="port fallback",
                border_style="bold yellow",
            ),
            highlight=False,
        )
    console.print(f"[bold green]OpenDPS {__version__} serving[/] (pid {info.pid})", highlight=False)
    print_status(console, info.status)
    console.print(
        f"Trust the CA for TLS: {info.status.ca_certificate} (see docs/operations.md). "
        "Press Ctrl+C to stop.",
        highlight=False,
    )


def _status(
    *,
    config: ConfigOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object for scripts.")
    ] = False,
    **values: Any,
) -> None:
    """Show the endpoints, ID scope, service connection string and CA of a running server."""
    settings = _load(values, config)
    try:
        state = read_state(settings.data_dir)
    except StatusError as err:
        _fail(str(err), EXIT_FAILURE)
    if not is_process_alive(state.pid):
        Console(stderr=True).print(
            f"[yellow]warning:[/] the server (pid {state.pid}) is not running; "
            "this is what it reported when it started.",
            highlight=False,
        )
    if json_output:
        typer.echo(json.dumps(state.status.to_json(), indent=2))
    else:
        print_status(Console(), state.status)


app.command("serve")(_with_setting_options(_serve, [setting.name for setting in SETTINGS]))
app.command("status")(_with_setting_options(_status, ["data_dir"]))


# The operator command groups (instances, enrollments, certificates, ...): cli/commands.py.
add_commands(app)


def main() -> None:
    """Entry point of the `opendps` script and `python -m opendps`."""
    app(prog_name="opendps")


if __name__ == "__main__":
    main()
