"""The bench's arithmetic: percentiles, per-operation CPU, ratios and the JSON contract."""

from __future__ import annotations

from opendps.bench.load import LoadResult, split_names
from opendps.bench.report import BenchReport, PhaseFigures, latency_percentiles


def _phase(cpu_seconds: float | None, operations: int = 100) -> PhaseFigures:
    result = LoadResult(latencies=[0.01] * operations, client_cpu_seconds=0.5, wall_seconds=2.0)
    return PhaseFigures.from_load(result, operations, cpu_seconds, 1024)


def test_percentiles_use_the_nearest_rank_in_milliseconds() -> None:
    latencies = [index / 1000 for index in range(1, 101)]  # 1 ms … 100 ms
    assert latency_percentiles(latencies) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}


def test_percentiles_of_nothing_are_zero() -> None:
    assert latency_percentiles([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}


def test_cpu_is_divided_per_operation_in_microseconds() -> None:
    phase = _phase(cpu_seconds=0.8)
    assert phase.server_cpu_us_per_operation == 8000
    assert phase.client_cpu_us_per_operation == 5000
    assert phase.per_second == 50


def test_failed_operations_do_not_count_towards_the_rate() -> None:
    result = LoadResult(latencies=[0.01] * 90, errors=10, wall_seconds=1.0)
    assert PhaseFigures.from_load(result, 100, None, None).per_second == 90


def test_yardstick_ratio_is_our_cpu_over_mosquittos() -> None:
    report = BenchReport({}, {}, _phase(0.8), yardstick=_phase(0.2))
    body = report.to_json()
    assert body["yardstickRatio"] == 4.0
    assert body["serverCpuUsPerRegistration"] == 8000
    assert body["yardstick"]["serverCpuUsPerCycle"] == 2000
    assert set(body["latencyMs"]) == {"p50", "p95", "p99", "max"}


def test_no_ratio_is_claimed_when_a_cpu_figure_is_unknown_or_zero() -> None:
    assert BenchReport({}, {}, _phase(None), yardstick=_phase(0.2)).yardstick_ratio is None
    assert BenchReport({}, {}, _phase(0.8), yardstick=_phase(0.0)).yardstick_ratio is None
    assert BenchReport({}, {}, _phase(0.8)).to_json()["yardstickRatio"] is None


def test_scale_ratio_compares_the_large_store_with_the_small_one() -> None:
    report = BenchReport({}, {}, _phase(0.8), scale=_phase(1.0), scale_setup={"preloaded": 10})
    body = report.to_json()
    assert body["scale"]["ratioToSmallStore"] == 1.25
    assert body["scale"]["preloaded"] == 10


def test_names_are_dealt_over_processes_without_empty_shares() -> None:
    names = [f"d{index}" for index in range(5)]
    assert split_names(names, 2) == [("d0", "d2", "d4"), ("d1", "d3")]
    assert split_names(names[:1], 3) == [("d0",)]
