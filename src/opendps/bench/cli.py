"""`opendps bench`: measure registrations/s, latency and server CPU per registration.

cli/commands.py adds the command to the root app with `add_bench_command`. The progress bar
and the table go to stderr and stdout respectively; with `--json` stdout carries only the
JSON document, so scripts can read it while a person still sees the progress.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from opendps.bench.load import LoadError
from opendps.bench.provision import ProvisionError
from opendps.bench.report import render_table
from opendps.bench.run import STORES, TRANSPORTS, BenchError, BenchParams, run_bench
from opendps.bench.server import ServerError
from opendps.bench.yardstick import YardstickError

EXIT_FAILURE = 1
EXIT_USAGE = 2


class _RichProgress:
    """One progress bar per phase, on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def phase(self, description: str, total: int) -> Callable[[int], None]:
        task = self._progress.add_task(description, total=total)
        return lambda count: self._progress.advance(task, count)


def bench(
    registrations: Annotated[
        int,
        typer.Option(help="Registrations in the measured phase (each on a new TLS connection)."),
    ] = 2000,
    concurrency: Annotated[
        int, typer.Option(help="Devices registering at the same time, over all processes.")
    ] = 50,
    processes: Annotated[
        int,
        typer.Option(help="Load-generator processes (use more when the client saturates a core)."),
    ] = 1,
    transport: Annotated[
        str, typer.Option(help=f"Device transport: {', '.join(TRANSPORTS)}.")
    ] = "mqtt",
    attestation: Annotated[
        str,
        typer.Option(
            help="individual (one symmetric-key enrollment per device, imported), group "
            "(one symmetric-key group, per-device derived keys) or x509 (one individual "
            "enrollment per device with its own self-signed certificate, CN = registration ID)."
        ),
    ] = "group",
    store: Annotated[
        str, typer.Option(help=f"Store of the started server: {', '.join(STORES)}.")
    ] = "sqlite",
    database: Annotated[
        str | None,
        typer.Option(help="Database URL for --store postgresql (postgresql://user@host/db)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Server worker processes (`opendps serve --workers`), if > 1.")
    ] = 1,
    yardstick: Annotated[
        bool,
        typer.Option(
            help="Also run the same TLS MQTT cycles against Mosquitto and report our CPU per "
            "registration as a ratio to its CPU per cycle (skipped if mosquitto is missing)."
        ),
    ] = True,
    preload: Annotated[
        int,
        typer.Option(
            help="After the first measurement, preload this many enrollments and registration "
            "states (e.g. 1000000), measure again and report the ratio. 0: no scale run."
        ),
    ] = 0,
    tls_version: Annotated[
        str, typer.Option("--tls-version", help="TLS version of every client: 1.2 or 1.3.")
    ] = "1.2",
    target: Annotated[
        Path | None,
        typer.Option(
            help="Bench a running server instead of starting one: its data dir (state.json "
            "gives endpoints, CA and admin key). Server CPU is read when its pid is local."
        ),
    ] = None,
    server_pid: Annotated[
        int | None,
        typer.Option(help="With --target: the server's pid, to read its CPU time and memory."),
    ] = None,
    idle_connections: Annotated[
        int,
        typer.Option(
            help="After the measurement, hold this many idle MQTT TLS connections (CONNECTed, "
            "keep-alive off) and report the server's memory with them open. 0: skip."
        ),
    ] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Benchmark device registration: throughput, latency and server CPU per registration."""
    if tls_version not in ("1.2", "1.3"):
        raise typer.BadParameter("use 1.2 or 1.3", param_hint="--tls-version")
    params = BenchParams(
        registrations=registrations,
        concurrency=concurrency,
        processes=processes,
        transport=transport,
        attestation=attestation,
        store=store,
        database=database,
        workers=workers,
        yardstick=yardstick,
        preload=preload,
        tls_version=tls_version,
        target=target,
        server_pid=server_pid,
        idle_connections=idle_connections,
    )
    stderr = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=stderr, transient=as_json) as progress:
            report = run_bench(params, _RichProgress(progress))
    except BenchError as err:
        stderr.print(f"[red]error:[/red] {err}")
        raise typer.Exit(EXIT_USAGE) from None
    except (ServerError, ProvisionError, LoadError, YardstickError) as err:
        stderr.print(f"[red]error:[/red] {err}")
        raise typer.Exit(EXIT_FAILURE) from None
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        Console().print(render_table(report))
        for sample in report.main.error_samples:
            stderr.print(f"[yellow]error sample:[/yellow] {sample}")


def add_bench_command(app: typer.Typer) -> None:
    """Add `opendps bench` to the root app."""
    app.command("bench")(bench)
