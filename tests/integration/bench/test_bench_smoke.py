"""A tiny `opendps bench` run, for correctness only: every registration assigned, no errors,
the JSON document complete. Speed is never asserted here (STYLE §3.4: benchmarks never go in
tests); the figures only have to be present.

Each run starts a real server (`python -m opendps serve` on free loopback ports) and a
load-generator process, so the runs are kept few and small.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from opendps.bench.run import BenchParams, run_bench
from opendps.bench.yardstick import find_mosquitto
from opendps.cli.main import app

REGISTRATIONS = 20
HAS_MOSQUITTO = find_mosquitto() is not None
REQUIRED_KEYS = (
    "registrationsPerSecond",
    "serverCpuUsPerRegistration",
    "yardstickRatio",
    "latencyMs",
    "errors",
    "parameters",
)


class _Silent:
    def phase(self, description: str, total: int) -> Callable[[int], None]:
        return lambda count: None


def test_bench_json_over_mqtt_registers_every_device() -> None:
    args = ["bench", "--registrations", str(REGISTRATIONS), "--concurrency", "5", "--json"]
    if not HAS_MOSQUITTO:
        args.append("--no-yardstick")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # The progress bar is transient and on stderr; stdout ends with the JSON document.
    body = json.loads(result.stdout[result.stdout.index("{") :])
    for key in REQUIRED_KEYS:
        assert key in body
    assert body["registrations"] == REGISTRATIONS
    assert body["errors"] == 0, body["errorSamples"]
    assert body["parameters"]["transport"] == "mqtt"
    assert set(body["latencyMs"]) >= {"p50", "p95", "p99"}
    assert body["serverCpuUsPerRegistration"] is not None
    if HAS_MOSQUITTO:
        assert body["yardstick"]["cycles"] == REGISTRATIONS
        assert body["yardstick"]["errors"] == 0, body["yardstick"]["errorSamples"]
        # Mosquitto's CPU for 20 cycles may round to 0 clock ticks: then no ratio is claimed.
        cycle_cpu = body["yardstick"]["serverCpuUsPerCycle"]
        assert (body["yardstickRatio"] is None) == (cycle_cpu == 0)
    else:
        assert body["yardstickRatio"] is None


@pytest.mark.parametrize(
    ("transport", "attestation"),
    [("https", "individual"), ("mqtt-ws", "group"), ("mqtt", "x509"), ("amqp", "group")],
)
def test_bench_registers_every_device_over(transport: str, attestation: str) -> None:
    params = BenchParams(
        registrations=REGISTRATIONS,
        concurrency=4,
        transport=transport,
        attestation=attestation,
        yardstick=False,
    )
    report = run_bench(params, _Silent())
    body = report.to_json()
    assert body["errors"] == 0, body["errorSamples"]
    assert body["registrations"] == REGISTRATIONS
    assert len(body["latencyMs"]) == 4
    assert body["parameters"]["attestation"] == attestation


def test_bench_refuses_a_transport_it_cannot_drive() -> None:
    result = CliRunner().invoke(app, ["bench", "--transport", "carrier-pigeon"])
    assert result.exit_code == 2
    assert "not benched" in result.output
