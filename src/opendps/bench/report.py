"""What a bench run measured: per-phase figures, the JSON document and the table.

The JSON keys are the contract for scripts and CI (`opendps bench --json`): at least
`registrationsPerSecond`, `serverCpuUsPerRegistration`, `yardstickRatio`, `latencyMs`
(`p50`, `p95`, `p99`), `errors` and `parameters`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from opendps.bench.load import LoadResult

MICROSECONDS = 1_000_000


@dataclass(frozen=True, slots=True)
class PhaseFigures:
    """One measured phase: N registrations (or yardstick cycles) under load."""

    operations: int
    errors: int
    error_samples: tuple[str, ...]
    wall_seconds: float
    latencies_ms: dict[str, float]
    # CPU of the process under test (our server's tree, or Mosquitto), None when unknown.
    server_cpu_us_per_operation: float | None
    server_rss_bytes: int | None
    client_cpu_us_per_operation: float

    @property
    def per_second(self) -> float:
        succeeded = self.operations - self.errors
        return succeeded / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @classmethod
    def from_load(
        cls,
        result: LoadResult,
        operations: int,
        server_cpu_seconds: float | None,
        server_rss_bytes: int | None,
    ) -> PhaseFigures:
        per_op = MICROSECONDS / max(operations, 1)
        return cls(
            operations=operations,
            errors=result.errors,
            error_samples=tuple(result.error_samples),
            wall_seconds=result.wall_seconds,
            latencies_ms=latency_percentiles(result.latencies),
            server_cpu_us_per_operation=(
                None if server_cpu_seconds is None else server_cpu_seconds * per_op
            ),
            server_rss_bytes=server_rss_bytes,
            client_cpu_us_per_operation=result.client_cpu_seconds * per_op,
        )


def latency_percentiles(latencies: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (nearest rank); zeros when nothing succeeded."""
    ordered = sorted(latencies)

    def rank(fraction: float) -> float:
        if not ordered:
            return 0.0
        index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
        return round(ordered[index] * 1000, 2)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": rank(1.0)}


@dataclass(slots=True)
class BenchReport:
    parameters: dict[str, Any]
    machine: dict[str, Any]
    main: PhaseFigures
    yardstick: PhaseFigures | None = None
    yardstick_skipped: str | None = None
    scale: PhaseFigures | None = None
    scale_setup: dict[str, float | int] = field(default_factory=dict)
    idle: dict[str, Any] | None = None

    @property
    def yardstick_ratio(self) -> float | None:
        ours = self.main.server_cpu_us_per_operation
        theirs = self.yardstick.server_cpu_us_per_operation if self.yardstick else None
        if ours is None or not theirs:
            return None
        return round(ours / theirs, 3)

    @property
    def scale_ratio(self) -> float | None:
        small = self.main.server_cpu_us_per_operation
        large = self.scale.server_cpu_us_per_operation if self.scale else None
        if small is None or large is None or not small:
            return None
        return round(large / small, 3)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"parameters": self.parameters, "machine": self.machine}
        body |= _phase_json(self.main, "registration")
        body["yardstickRatio"] = self.yardstick_ratio
        body["yardstick"] = (
            _phase_json(self.yardstick, "cycle") if self.yardstick is not None else None
        )
        if self.yardstick_skipped:
            body["yardstickSkipped"] = self.yardstick_skipped
        body["scale"] = None
        if self.scale is not None:
            body["scale"] = (
                _phase_json(self.scale, "registration")
                | self.scale_setup
                | {"ratioToSmallStore": self.scale_ratio}
            )
        body["idle"] = self.idle
        return body


def _phase_json(phase: PhaseFigures, unit: str) -> dict[str, Any]:
    suffix = unit[0].upper() + unit[1:]
    plural = "registrations" if unit == "registration" else "cycles"
    server_cpu = phase.server_cpu_us_per_operation
    return {
        plural: phase.operations,
        "errors": phase.errors,
        "errorSamples": list(phase.error_samples),
        "durationSeconds": round(phase.wall_seconds, 3),
        f"{plural}PerSecond": round(phase.per_second, 1),
        "latencyMs": phase.latencies_ms,
        f"serverCpuUsPer{suffix}": None if server_cpu is None else round(server_cpu, 1),
        "serverRssBytes": phase.server_rss_bytes,
        f"clientCpuUsPer{suffix}": round(phase.client_cpu_us_per_operation, 1),
    }


def _cpu(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} µs"


def render_table(report: BenchReport) -> Table:
    """The human summary: one column per measured phase."""
    table = Table(title="opendps bench", show_lines=False)
    table.add_column("")
    phases: list[tuple[str, PhaseFigures]] = [("OpenDPS", report.main)]
    if report.scale is not None:
        phases.append(
            (f"OpenDPS, {report.scale_setup.get('preloaded', 0):,.0f} preloaded", report.scale)
        )
    if report.yardstick is not None:
        phases.append(("Mosquitto (yardstick)", report.yardstick))
    for name, _ in phases:
        table.add_column(name, justify="right")
    rows: list[tuple[str, list[str]]] = [
        ("operations", [f"{p.operations:,}" for _, p in phases]),
        ("errors", [f"{p.errors:,}" for _, p in phases]),
        ("per second", [f"{p.per_second:,.1f}" for _, p in phases]),
        ("p50 / p95 / p99 ms", [_latency(p) for _, p in phases]),
        ("server CPU per op", [_cpu(p.server_cpu_us_per_operation) for _, p in phases]),
        ("server RSS", [_mib(p.server_rss_bytes) for _, p in phases]),
        ("client CPU per op", [_cpu(p.client_cpu_us_per_operation) for _, p in phases]),
    ]
    for label, values in rows:
        table.add_row(label, *values)
    ratios = []
    if report.yardstick_ratio is not None:
        ratios.append(f"yardstick ratio (our CPU / Mosquitto's): {report.yardstick_ratio:.2f}")
    elif report.yardstick_skipped:
        ratios.append(f"yardstick skipped: {report.yardstick_skipped}")
    if report.scale_ratio is not None:
        ratios.append(f"large-store / small-store CPU: {report.scale_ratio:.2f}")
    if report.idle is not None:
        held = report.idle.get("serverRssBytesHeld")
        ratios.append(
            f"{report.idle['opened']:,} idle connections: server RSS {_mib(held)}"
            if isinstance(held, int)
            else f"{report.idle['opened']:,} idle connections"
        )
    if ratios:
        table.caption = "; ".join(ratios)
    return table


def _latency(phase: PhaseFigures) -> str:
    values = phase.latencies_ms
    return f"{values['p50']:.1f} / {values['p95']:.1f} / {values['p99']:.1f}"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"
