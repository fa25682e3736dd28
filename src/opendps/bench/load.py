"""The load generator: worker processes, each an asyncio loop running many devices at once.

Python's per-connection TLS and protocol work would make one load-generator process the
bottleneck long before the server, so the load is spread over `processes` worker processes
(multiprocessing, spawn start method: no state inherited from the parent). Each runs
`concurrency` devices concurrently, each device one registration on a new TLS connection.

The parent measures only the load window: workers first start up (imports, event loop) and say
`ready`; the parent then reads the clock and the server's CPU time and releases them all at
once; the window closes when the last result is in. Workers report progress every
PROGRESS_INTERVAL_SECONDS and send their latencies back at the end.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from typing import Any, Literal

from opendps.attestation.sas import build_sas_token
from opendps.attestation.symmetric import derive_device_key
from opendps.bench.clients import (
    BenchClientError,
    Device,
    Target,
    client_context,
    hold_mqtt_connection,
    register_amqp,
    register_https,
    register_mqtt,
    yardstick_cycle,
)

# `idle`: open one MQTT connection per name, CONNECT, and hold them all until released.
Workload = Literal["https", "mqtt", "mqtt-ws", "amqp", "yardstick", "idle"]
PROGRESS_INTERVAL_SECONDS = 0.2
# Error messages kept per worker for the report: enough to see what went wrong.
MAX_ERROR_SAMPLES = 5
# Workers must be ready within this (spawn + imports); a slower start means something is wrong.
STARTUP_TIMEOUT_SECONDS = 60.0
# Device tokens name the key `registration` (protocol.md §2.1) and live an hour (§2.2).
DEVICE_KEY_NAME = "registration"
TOKEN_TTL_SECONDS = 3600


class LoadError(Exception):
    """A worker process failed to start or died."""


@dataclass(frozen=True, slots=True)
class LoadJob:
    """What one worker process does. Picklable: it crosses the process boundary."""

    workload: Workload
    target: Target
    ca_file: str
    tls_version: str
    concurrency: int
    # Registration IDs (or yardstick client IDs) this worker handles, one connection each.
    names: tuple[str, ...]
    id_scope: str = ""
    # The symmetric key: the enrollment's own (individual) or the group's, from which each
    # device's key is derived.
    key: str = ""
    group_key: bool = False
    # X.509 devices: the directory holding `<name>.pem` (certificate) and `<name>.key` for
    # each name, presented in the TLS handshake instead of a SAS token.
    certificate_dir: str = ""


@dataclass(slots=True)
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, successful ones
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    client_cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def merge(self, other: LoadResult) -> None:
        self.latencies.extend(other.latencies)
        self.errors += other.errors
        room = MAX_ERROR_SAMPLES - len(self.error_samples)
        self.error_samples.extend(other.error_samples[: max(room, 0)])
        self.client_cpu_seconds += other.client_cpu_seconds


def split_names(names: list[str], processes: int) -> list[tuple[str, ...]]:
    """Deal `names` round-robin over `processes` workers (none gets an empty share)."""
    shares = [tuple(names[index::processes]) for index in range(processes)]
    return [share for share in shares if share]


def run_load(
    jobs: list[LoadJob],
    *,
    on_progress: Callable[[int], None],
    on_start: Callable[[], None],
    on_held: Callable[[], None] = lambda: None,
) -> LoadResult:
    """Run `jobs` in one worker process each; `on_start` runs just before the load is released
    (read the server's CPU there); `on_progress(n)` as registrations complete. For `idle` jobs,
    `on_held` runs once every connection is open (or failed), before they are released.

    Raises LoadError when a worker cannot start or dies.
    """
    context = multiprocessing.get_context("spawn")
    messages: multiprocessing.Queue[tuple[str, Any]] = context.Queue()
    go, release = context.Event(), context.Event()
    workers = [
        context.Process(target=_worker_main, args=(job, messages, go, release), daemon=True)
        for job in jobs
    ]
    for worker in workers:
        worker.start()
    try:
        _wait_ready(messages, workers)
        on_start()
        started = time.perf_counter()
        go.set()
        result = _collect(messages, workers, on_progress, _Release(len(workers), on_held, release))
        result.wall_seconds = time.perf_counter() - started
        return result
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()


def _wait_ready(messages: multiprocessing.Queue[tuple[str, Any]], workers: list[Any]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    ready = 0
    while ready < len(workers):
        try:
            kind, _ = messages.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise LoadError("the load-generator processes did not start in time") from None
        if kind == "ready":
            ready += 1


class _Release:
    """Counts `held` messages; when every worker holds its connections, calls back and
    releases them."""

    def __init__(self, workers: int, on_held: Callable[[], None], event: EventType) -> None:
        self._waiting = workers
        self._on_held = on_held
        self._event = event

    def held(self) -> None:
        self._waiting -= 1
        if self._waiting == 0:
            self._on_held()
            self._event.set()


def _collect(
    messages: multiprocessing.Queue[tuple[str, Any]],
    workers: list[Any],
    on_progress: Callable[[int], None],
    release: _Release,
) -> LoadResult:
    total = LoadResult()
    finished = 0
    while finished < len(workers):
        try:
            kind, payload = messages.get(timeout=1.0)
        except queue.Empty:
            if not all(worker.is_alive() for worker in workers):
                # A worker that died without sending its result would hang the bench.
                _drain_dead(workers)
            continue
        if kind == "progress":
            on_progress(int(payload))
        elif kind == "held":
            release.held()
        elif kind == "result":
            total.merge(payload)
            finished += 1
    return total


def _drain_dead(workers: list[Any]) -> None:
    for worker in workers:
        if not worker.is_alive() and worker.exitcode not in (0, None):
            raise LoadError(f"a load-generator process died (exit code {worker.exitcode})")


# -- inside a worker process ----------------------------------------------------------------


def _worker_main(job: LoadJob, messages: Any, go: EventType, release: EventType) -> None:
    _install_uvloop()
    result = asyncio.run(_run_job(job, messages, go, release))
    messages.put(("result", result))


def _install_uvloop() -> None:
    # The load generator must spend as little CPU per connection as it can; uvloop halves it.
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _run_job(job: LoadJob, messages: Any, go: EventType, release: EventType) -> LoadResult:
    context = client_context(job.ca_file, job.tls_version)
    messages.put(("ready", None))
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    # The client's own CPU over the load window only (start-up imports are not the load).
    cpu_before = _own_cpu_seconds()
    if job.workload == "idle":
        result = await _hold_all(job, context, messages, release)
    else:
        result = await _run_all(job, _action(job, context), messages)
    result.client_cpu_seconds = _own_cpu_seconds() - cpu_before
    return result


async def _run_all(
    job: LoadJob, action: Callable[[str], Awaitable[None]], messages: Any
) -> LoadResult:
    result = LoadResult()
    names = iter(job.names)
    pending_progress = [0]
    async with asyncio.TaskGroup() as group:
        reporter = group.create_task(_report_progress(messages, pending_progress))
        runners = [
            group.create_task(_device_loop(names, action, result, pending_progress))
            for _ in range(min(job.concurrency, len(job.names)))
        ]
        await asyncio.gather(*runners)
        reporter.cancel()
    messages.put(("progress", pending_progress[0]))
    return result


async def _hold_all(job: LoadJob, context: Any, messages: Any, release: EventType) -> LoadResult:
    """Open every connection (at most `concurrency` handshakes at a time), report `held`, wait
    for the parent's release, close them all."""
    result = LoadResult()
    opening = asyncio.Semaphore(job.concurrency)
    released = asyncio.Event()
    settled = [0]
    all_settled = asyncio.Event()

    def settle() -> None:
        opening.release()
        settled[0] += 1
        messages.put(("progress", 1))
        if settled[0] == len(job.names):
            all_settled.set()

    async def hold(name: str) -> None:
        await opening.acquire()
        started = time.perf_counter()
        connected = False

        def on_connected() -> None:
            nonlocal connected
            connected = True
            result.latencies.append(time.perf_counter() - started)
            settle()

        try:
            await hold_mqtt_connection(
                job.target, context, _device(job, name), on_connected=on_connected, release=released
            )
        except BenchClientError as err:
            result.errors += 1
            if len(result.error_samples) < MAX_ERROR_SAMPLES:
                result.error_samples.append(f"{name}: {err}")
            if not connected:
                settle()

    async with asyncio.TaskGroup() as group:
        for name in job.names:
            group.create_task(hold(name))
        await all_settled.wait()
        messages.put(("held", None))
        await asyncio.get_running_loop().run_in_executor(None, release.wait)
        released.set()
    return result


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def _device_loop(
    names: Iterator[str],
    action: Callable[[str], Awaitable[None]],
    result: LoadResult,
    pending_progress: list[int],
) -> None:
    for name in names:
        started = time.perf_counter()
        try:
            await action(name)
        except BenchClientError as err:
            result.errors += 1
            if len(result.error_samples) < MAX_ERROR_SAMPLES:
                result.error_samples.append(f"{name}: {err}")
        else:
            result.latencies.append(time.perf_counter() - started)
        pending_progress[0] += 1


async def _report_progress(messages: Any, pending_progress: list[int]) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
        if pending_progress[0]:
            messages.put(("progress", pending_progress[0]))
            pending_progress[0] = 0


def _action(job: LoadJob, context: ssl.SSLContext) -> Callable[[str], Awaitable[None]]:
    if job.workload == "yardstick":
        return lambda name: yardstick_cycle(job.target, context, name)

    def device_context(name: str) -> ssl.SSLContext:
        if not job.certificate_dir:
            return context  # shared: a context holds no per-connection state
        own = client_context(job.ca_file, job.tls_version)
        base = os.path.join(job.certificate_dir, name)
        own.load_cert_chain(base + ".pem", base + ".key")
        return own

    if job.workload == "https":
        return lambda name: register_https(job.target, device_context(name), _device(job, name))
    if job.workload == "amqp":
        return lambda name: register_amqp(job.target, job.ca_file, _device(job, name))
    websocket = job.workload == "mqtt-ws"
    return lambda name: register_mqtt(
        job.target, device_context(name), _device(job, name), websocket=websocket
    )


def _device(job: LoadJob, name: str) -> Device:
    if job.certificate_dir:
        return Device(job.id_scope, name, None)
    key = derive_device_key(job.key, name) if job.group_key else job.key
    resource = f"{job.id_scope}/registrations/{name}"
    token = build_sas_token(
        resource, key, int(time.time()) + TOKEN_TTL_SECONDS, key_name=DEVICE_KEY_NAME
    )
    return Device(job.id_scope, name, token)
