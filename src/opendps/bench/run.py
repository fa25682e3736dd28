"""One bench run, start to finish: server, enrollments, warm-up, measured phases, yardstick.

Order: start (or read) the server → create enrollments for every device of the run → warm up
(caches, connection pools, JIT-less Python's first-call costs) → measure → optionally preload
and measure again → optionally the Mosquitto yardstick with the same clients and settings.
Server CPU is read from /proc just before the load is released and just after it ends (plus a
short settle for the last disconnects), so start-up and enrollment creation are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import secrets
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, cast

from opendps.bench.clients import Target
from opendps.bench.load import LoadJob, Workload, run_load, split_names
from opendps.bench.procstat import cpu_seconds, rss_bytes
from opendps.bench.provision import (
    AdminSession,
    new_symmetric_key,
    preload_registration_states,
    write_device_certificates,
)
from opendps.bench.report import BenchReport, PhaseFigures
from opendps.bench.server import (
    LOOPBACK,
    ServerInfo,
    ServerOptions,
    read_server_info,
    started_server,
)
from opendps.bench.yardstick import find_mosquitto, running_mosquitto

TRANSPORTS = ("mqtt", "https", "mqtt-ws", "amqp")
ATTESTATIONS = ("individual", "group", "x509")
STORES = ("sqlite", "postgresql")
# Registrations before the measured phase: enough to fill caches and pools, few enough to be
# cheap. A tenth of the run, within these bounds.
MIN_WARMUP = 20
MAX_WARMUP = 200
# Let the server finish the last disconnects before its CPU time is read again.
SETTLE_SECONDS = 0.3
# The dev PKI's server certificate files in a data dir (app/devpki.py), reused by Mosquitto.
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
# Connections beyond the idle ones the server must accept (the bench's own admin calls).
IDLE_HEADROOM = 100
# Let the server's memory settle once every idle connection is open.
IDLE_SETTLE_SECONDS = 1.0


class BenchError(Exception):
    """The bench cannot run as asked (the message says why)."""


@dataclass(frozen=True, slots=True)
class BenchParams:
    registrations: int = 2000
    concurrency: int = 50
    processes: int = 1
    transport: str = "mqtt"
    attestation: str = "group"
    store: str = "sqlite"
    database: str | None = None
    workers: int = 1
    yardstick: bool = True
    preload: int = 0
    tls_version: str = "1.2"
    # An existing server's data dir (state.json); None starts one.
    target: Path | None = None
    server_pid: int | None = None
    # Idle MQTT connections to hold open for the memory figure; 0: none.
    idle_connections: int = 0

    def to_json(self) -> dict[str, object]:
        body = asdict(self)
        body["target"] = None if self.target is None else str(self.target)
        if self.database is not None:
            body["database"] = "(given)"  # may carry a password
        return {_camel(name): value for name, value in body.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Progress(Protocol):
    def phase(self, description: str, total: int) -> Callable[[int], None]:
        """Start showing a phase; the callable advances it by n."""
        ...


@dataclass(slots=True)
class _Run:
    """The fixed facts of a run, shared by its phases."""

    params: BenchParams
    info: ServerInfo
    dial_host: str
    run_id: str
    key: str
    server_pid: int | None
    progress: Progress
    # X.509 runs: where the device certificates and keys are written.
    certificate_dir: Path

    def names(self, phase: str, count: int) -> list[str]:
        return [f"bench-{self.run_id}-{phase}-{index:07d}" for index in range(count)]

    def jobs(self, workload: Workload, target: Target, names: list[str]) -> list[LoadJob]:
        return [
            LoadJob(
                workload=workload,
                target=target,
                ca_file=str(self.info.ca_file),
                tls_version=self.params.tls_version,
                concurrency=max(1, self.params.concurrency // self.params.processes),
                names=share,
                id_scope=self.info.id_scope,
                key=self.key,
                group_key=self.params.attestation == "group",
                certificate_dir=str(self.certificate_dir) if self.is_x509 else "",
            )
            for share in split_names(names, self.params.processes)
        ]

    @property
    def is_x509(self) -> bool:
        return self.params.attestation == "x509"

    def device_target(self) -> Target:
        ports = {"mqtt": self.info.mqtt_port, "amqp": self.info.amqp_port}
        port = ports.get(self.params.transport, self.info.https_port)
        return Target(self.dial_host, port, self.info.host)


def run_bench(params: BenchParams, progress: Progress) -> BenchReport:
    """Raises BenchError (or ServerError, ProvisionError, LoadError) when the run cannot go on."""
    _check(params)
    with _server(params) as info, tempfile.TemporaryDirectory(prefix="opendps-bench-") as temp:
        run = _Run(
            params=params,
            info=info,
            dial_host=LOOPBACK if info.host == "localhost" else info.host,
            run_id=secrets.token_hex(3),
            key=new_symmetric_key(),
            server_pid=params.server_pid or _local_pid(info, params),
            progress=progress,
            certificate_dir=Path(temp),
        )
        admin = AdminSession(info, run.dial_host)
        warmup = min(MAX_WARMUP, max(MIN_WARMUP, params.registrations // 10))
        _enroll(run, admin, run.names("warm", warmup) + run.names("run", params.registrations))
        _measure_devices(run, "warm-up", run.names("warm", warmup))
        main = _measure_devices(run, "registrations", run.names("run", params.registrations))
        report = BenchReport(params.to_json(), _machine(), main)
        if params.preload:
            report.scale, report.scale_setup = _scale_phase(run, admin)
        if params.idle_connections:
            report.idle = _idle_phase(run)
        if params.yardstick:
            report.yardstick, report.yardstick_skipped = _yardstick_phase(run)
        else:
            report.yardstick_skipped = "--no-yardstick"
        return report


def _check(params: BenchParams) -> None:
    if params.transport not in TRANSPORTS:
        raise BenchError(f"transport {params.transport!r} is not benched yet; use {TRANSPORTS}")
    if params.transport == "amqp" and params.attestation == "x509":
        raise BenchError("x509 is benched over mqtt, mqtt-ws and https; amqp takes SAS devices")
    if params.attestation not in ATTESTATIONS:
        raise BenchError(
            f"attestation {params.attestation!r} is not benched yet; use {ATTESTATIONS}"
        )
    if params.store == "postgresql" and params.target is None and not params.database:
        raise BenchError("--store postgresql needs --database postgresql://…")
    if params.registrations < 1 or params.concurrency < 1 or params.processes < 1:
        raise BenchError("--registrations, --concurrency and --processes must be at least 1")


@contextlib.contextmanager
def _server(params: BenchParams) -> Iterator[ServerInfo]:
    if params.target is not None:
        yield read_server_info(params.target)
        return
    database = params.database if params.store == "postgresql" else None
    # The server's default cap (10,000 per listener) would refuse the last idle connections.
    max_connections = params.idle_connections + IDLE_HEADROOM if params.idle_connections else None
    options = ServerOptions(
        database=database, workers=params.workers, max_connections=max_connections
    )
    with started_server(options) as info:
        yield info


def _local_pid(info: ServerInfo, params: BenchParams) -> int | None:
    # A target's pid in state.json is only ours to read when the server runs on this machine.
    if params.target is not None and not Path(f"/proc/{info.pid}").exists():
        return None
    return info.pid


def _enroll(run: _Run, admin: AdminSession, names: list[str]) -> None:
    if run.params.attestation == "group":
        admin.put_enrollment_group(f"bench-{run.run_id}", run.key)
    elif run.is_x509:
        certificates = write_device_certificates(run.certificate_dir, names)
        admin.import_individual_enrollments(names, run.key, certificates)
    else:
        admin.import_individual_enrollments(names, run.key)


def _measure_devices(run: _Run, label: str, names: list[str]) -> PhaseFigures:
    workload = cast(Workload, run.params.transport)  # _check: one of TRANSPORTS
    return _measure(run, label, run.jobs(workload, run.device_target(), names), run.server_pid)


def _measure(run: _Run, label: str, jobs: list[LoadJob], pid: int | None) -> PhaseFigures:
    total = sum(len(job.names) for job in jobs)
    advance = run.progress.phase(label, total)
    before: list[float] = []

    def read_cpu_before() -> None:
        if pid is not None:
            before.append(cpu_seconds(pid))

    result = run_load(jobs, on_progress=advance, on_start=read_cpu_before)
    time.sleep(SETTLE_SECONDS)
    cpu = cpu_seconds(pid) - before[0] if pid is not None else None
    rss = rss_bytes(pid) if pid is not None else None
    return PhaseFigures.from_load(result, total, cpu, rss)


def _scale_phase(run: _Run, admin: AdminSession) -> tuple[PhaseFigures, dict[str, float | int]]:
    """Preload `preload` enrollments and registration states, then measure again."""
    preloaded = run.names("preload", run.params.preload)
    advance = run.progress.phase("preloading", 2)
    import_seconds = admin.import_individual_enrollments(preloaded, run.key)
    advance(1)
    database = run.params.database or run.info.database
    states_seconds = asyncio.run(
        preload_registration_states(database, run.info.id_scope, preloaded)
    )
    advance(1)
    fresh = run.names("scale", run.params.registrations)
    _enroll(run, admin, fresh)
    figures = _measure_devices(run, "registrations, large store", fresh)
    setup: dict[str, float | int] = {
        "preloaded": len(preloaded),
        "importSeconds": round(import_seconds, 2),
        "preloadStatesSeconds": round(states_seconds, 2),
    }
    return figures, setup


def _idle_phase(run: _Run) -> dict[str, object]:
    """Hold `idle_connections` CONNECTed MQTT connections; the server's RSS with them open."""
    pid = run.server_pid
    before = rss_bytes(pid) if pid is not None else None
    held: list[int] = []

    def read_rss_held() -> None:
        time.sleep(IDLE_SETTLE_SECONDS)
        if pid is not None:
            held.append(rss_bytes(pid))

    names = run.names("idle", run.params.idle_connections)
    target = Target(run.dial_host, run.info.mqtt_port, run.info.host)
    advance = run.progress.phase("idle connections", len(names))
    result = run_load(
        run.jobs("idle", target, names),
        on_progress=advance,
        on_start=lambda: None,
        on_held=read_rss_held,
    )
    opened = len(names) - result.errors
    rss_held = held[0] if held else None
    growth = None if rss_held is None or before is None else rss_held - before
    return {
        "connections": len(names),
        "opened": opened,
        "errors": result.errors,
        "errorSamples": result.error_samples,
        "serverRssBytesBefore": before,
        "serverRssBytesHeld": rss_held,
        "serverRssBytesPerConnection": None if growth is None or not opened else growth // opened,
    }


def _yardstick_phase(run: _Run) -> tuple[PhaseFigures | None, str | None]:
    binary = find_mosquitto()
    if binary is None:
        return None, "mosquitto is not installed"
    data_dir = run.info.data_dir
    with running_mosquitto(
        binary,
        run.info.ca_file,
        data_dir / SERVER_CERT_FILE,
        data_dir / SERVER_KEY_FILE,
        run.params.tls_version,
    ) as broker:
        target = Target(LOOPBACK, broker.port, run.info.host)
        warm = run.names("ywarm", MIN_WARMUP)
        _measure(run, "yardstick warm-up", run.jobs("yardstick", target, warm), broker.pid)
        cycles = run.names("ycycle", run.params.registrations)
        figures = _measure(run, "yardstick", run.jobs("yardstick", target, cycles), broker.pid)
    return figures, None


def _machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "loadAverage": [round(value, 2) for value in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
    }
