"""`opendps serve --workers N`: one supervisor process, N server processes sharing every port.

One Python process runs one event loop on one core. Workers are full servers (app.serve.run)
in forked processes; each binds every listener's port with SO_REUSEPORT, and the kernel
spreads new connections over their listening sockets. They share the store (the database).

The supervisor (the process the operator started; its pid is the one in state.json):
1. Bootstraps once, before any worker exists: app.wiring.build prepares the data dir (dev PKI,
   admin key), migrates the store and creates the default instance, then is closed. Workers
   find all of it in place and never race to create it.
2. Chooses the ports, once, through `bind_with_fallback` (so a default port that is taken or
   privileged falls back to port + 8000 exactly as with one process, and port 0 becomes one
   port for every worker). Each chosen port stays *reserved* by a socket the supervisor binds
   with SO_REUSEPORT but never listens on: it holds the port against other programs, yet
   receives no connections (the kernel only hands connections to listening sockets).
3. Forks the workers (stop signals blocked meanwhile, so none is lost or half-handled); each
   binds exactly the chosen ports with SO_REUSEPORT, no fallback.
4. Once every worker listens: writes state.json (its own pid) and prints the banner.
5. On SIGTERM or SIGINT: sends SIGTERM to every worker; each drains as a single server does
   (in-flight registrations finish and commit). Exits 0 once all have exited 0.

A worker that exits on its own is logged, the others are stopped, and the supervisor exits 1.
It is not restarted: the crash has already cut its connections, and a crash loop inside one
service would hide from the operator what systemd or Kubernetes (restart policy, alerts)
reports when the service itself exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from aiohttp import web

from opendps.app.config import Settings
from opendps.app.serve import (
    AMQP_LISTENER,
    HTTPS_LISTENER,
    MQTT_LISTENER,
    BoundPort,
    ListenerPorts,
    RunningServerInfo,
    bind_with_fallback,
    run,
    status_document,
)
from opendps.app.status import ServerState, StatusDocument, remove_state, write_state
from opendps.app.wiring import StartupError, build
from opendps.observability.logging import log_event

logger = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
# Responses of a worker name it (1..N), so an operator can see how connections are spread.
WORKER_HEADER = "X-OpenDPS-Worker"
# Linux prctl(PR_SET_PDEATHSIG): a worker gets SIGTERM (and drains) if the supervisor is killed.
_PR_SET_PDEATHSIG = 1


@dataclass(slots=True)
class PortReservation:
    """Sockets bound to one port with SO_REUSEPORT but not listening (see the module doc)."""

    sockets: tuple[socket.socket, ...]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def reserve_port(host: str | None, port: int) -> PortReservation:
    """Reserve `port` on `host` (None: every interface) for workers that bind it with SO_REUSEPORT.

    Raises OSError (EADDRINUSE, EACCES…) when a listener already holds the port, even one
    with SO_REUSEPORT: a port another server uses is taken, never silently shared.
    """
    infos = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    addresses = list(dict.fromkeys((info[0], info[4]) for info in infos))
    if port != 0:
        for family, address in addresses:
            # Without SO_REUSEPORT, this bind fails if anything listens on the port.
            with _bound_socket(family, address, port, reuse_port=False):
                pass
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            # Port 0: the first socket gets a free port; the other families take the same one.
            chosen = port or (sockets[0].getsockname()[1] if sockets else 0)
            sockets.append(_bound_socket(family, address, chosen, reuse_port=True))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return PortReservation(tuple(sockets))


def _bound_socket(
    family: int, address: tuple[object, ...], port: int, *, reuse_port: bool
) -> socket.socket:
    # The same options asyncio's create_server sets, so that the reservation and the workers'
    # listeners agree (SO_REUSEADDR: restart despite TIME_WAIT; IPv6 sockets IPv6 only).
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address[0], port, *address[2:]))
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the supervisor knows before forking: the ports and the status to announce."""

    ports: ListenerPorts
    reservations: tuple[PortReservation, ...]
    status: StatusDocument
    fallbacks: tuple[str, ...]
    admin_key_file: Path


async def prepare(settings: Settings) -> Prepared:
    """Bootstrap the data dir and the store once, and reserve every listener's port."""
    app = await build(settings)
    bound: list[BoundPort[PortReservation]] = []
    try:
        for listener, name in (
            (HTTPS_LISTENER, "https_port"),
            (MQTT_LISTENER, "mqtt_port"),
            (AMQP_LISTENER, "amqp_port"),
        ):
            bound.append(await _reserve(settings, listener, name))
        https, mqtt, amqp = (port.port for port in bound)
        return Prepared(
            ListenerPorts(https, mqtt, amqp),
            tuple(port.server for port in bound),
            status_document(app, https, mqtt, amqp),
            tuple(port.fallback for port in bound if port.fallback),
            app.data_dir.admin_key_file,
        )
    except BaseException:
        for port in bound:
            port.server.close()
        raise
    finally:
        await app.close()


async def _reserve(settings: Settings, listener: str, name: str) -> BoundPort[PortReservation]:
    async def start(port: int) -> PortReservation:
        return reserve_port(settings.bind, port)

    port: int = getattr(settings, name)
    return await bind_with_fallback(
        listener, port, explicit=settings.is_explicit(name), start=start
    )


# -- the supervisor ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Worker:
    index: int
    process: BaseProcess
    ready: Connection
    exited: bool = False


def supervise(settings: Settings, *, on_ready: Callable[[RunningServerInfo], None]) -> int:
    """Run `settings.workers` workers until a stop signal; return the exit code.

    Raises StartupError when the ports cannot be bound or a worker fails before it listens.
    """
    if not hasattr(socket, "SO_REUSEPORT") or sys.platform == "win32":
        raise StartupError("--workers above 1 needs SO_REUSEPORT (Linux or macOS)")
    prepared = asyncio.run(prepare(settings))
    try:
        return _Supervisor(settings, prepared, on_ready).run()
    finally:
        for reservation in prepared.reservations:
            reservation.close()


class _Supervisor:
    def __init__(
        self,
        settings: Settings,
        prepared: Prepared,
        on_ready: Callable[[RunningServerInfo], None],
    ) -> None:
        self.settings = settings
        self.prepared = prepared
        self.on_ready = on_ready
        self.workers: list[_Worker] = []
        self.stopping = False
        self.failure: str | None = None

    def run(self) -> int:
        previous = self._start_workers()
        wrote_state = False
        try:
            wrote_state = self._watch()
        finally:
            self._stop_workers()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for worker in self.workers:
                worker.ready.close()
                worker.process.join()
            if wrote_state:
                remove_state(self.settings.data_dir)
        log_event(logger, logging.INFO, "server.workers_stopped", failed=self.failure is not None)
        if self.failure is not None and not wrote_state:
            raise StartupError(self.failure)
        return 0 if self.failure is None else 1

    def _start_workers(self) -> dict[signal.Signals, SignalHandler]:
        """Fork every worker with stop signals blocked, then install the forwarding handler."""
        context = multiprocessing.get_context("fork")
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for index in range(1, self.settings.workers + 1):
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker_process,
                    args=(self.settings, self.prepared, index, writer, os.getpid()),
                    name=f"opendps-worker-{index}",
                )
                process.start()
                writer.close()
                self.workers.append(_Worker(index, process, reader))
            return {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        except BaseException:
            self._stop_workers()
            raise
        finally:
            # Signals that arrived meanwhile are delivered now, to the handler just installed.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log_event(logger, logging.INFO, "server.stopping", received=signal.Signals(signum).name)
        self.stopping = True
        self._stop_workers()

    def _stop_workers(self) -> None:
        """SIGTERM to every worker not yet reaped (a reaped worker's pid may be reused)."""
        self.stopping = True
        for worker in self.workers:
            if not worker.exited and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)

    def _watch(self) -> bool:
        """Wait for readiness and exits until every worker has exited; True if state.json was
        written."""
        by_sentinel = {worker.process.sentinel: worker for worker in self.workers}
        waiting_ready = {worker.ready: worker for worker in self.workers}
        ready = 0
        wrote_state = False
        while by_sentinel:
            for event in wait([*by_sentinel, *waiting_ready]):
                if isinstance(event, Connection):
                    del waiting_ready[event]
                    with contextlib.suppress(EOFError, OSError):  # EOF: it died first
                        event.recv()
                        ready += 1
                    if ready == len(self.workers) and not self.stopping:
                        self._announce()
                        wrote_state = True
                elif isinstance(event, int):
                    self._reap(by_sentinel.pop(event))
        return wrote_state

    def _announce(self) -> None:
        prepared = self.prepared
        state = ServerState(prepared.status, os.getpid(), prepared.admin_key_file)
        write_state(self.settings.data_dir, state)
        pids = [worker.process.pid for worker in self.workers]
        log_event(logger, logging.INFO, "server.workers_started", workers=len(pids), pids=pids)
        self.on_ready(RunningServerInfo(prepared.status, os.getpid(), prepared.fallbacks))

    def _reap(self, worker: _Worker) -> None:
        worker.process.join()
        worker.exited = True
        code = worker.process.exitcode
        if self.stopping:
            if code != 0 and self.failure is None:
                self.failure = f"worker {worker.index} exited with code {code} while stopping"
            return
        log_event(
            logger,
            logging.ERROR,
            "server.worker_died",
            worker=worker.index,
            pid=worker.process.pid,
            exit_code=code,
        )
        self.failure = (
            f"worker {worker.index} (pid {worker.process.pid}) exited unexpectedly with code "
            f"{code}; the other workers were stopped (see the log above)"
        )
        self._stop_workers()


# -- a worker ------------------------------------------------------------------------------------


def _worker_process(
    settings: Settings, prepared: Prepared, index: int, ready: Connection, supervisor: int
) -> None:
    """Body of a forked worker: stop signals are still blocked (see _start_workers)."""
    for reservation in prepared.reservations:
        reservation.close()  # the supervisor's copies keep the ports reserved
    _die_with(supervisor)
    try:
        code = _run_worker(settings, prepared.ports, index, ready)
    finally:
        ready.close()
    sys.exit(code)


def _die_with(supervisor: int) -> None:
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    if os.getppid() != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor died before prctl took effect


def _run_worker(settings: Settings, ports: ListenerPorts, index: int, ready: Connection) -> int:
    try:
        import uvloop

        return int(uvloop.run(_serve_worker(settings, ports, index, ready)))
    except StartupError as err:
        log_event(logger, logging.ERROR, "server.worker_failed", worker=index, error=str(err))
        return 1


async def _serve_worker(
    settings: Settings, ports: ListenerPorts, index: int, ready: Connection
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    # From here a stop signal (even one sent during the fork) ends in a clean drain.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    app = await build(settings)
    app.web_app.on_response_prepare.append(_worker_header(index))

    def listening(_info: RunningServerInfo) -> None:
        log_event(logger, logging.INFO, "server.worker_ready", worker=index, pid=os.getpid())
        with contextlib.suppress(OSError):
            ready.send(index)

    try:
        return await run(app, on_ready=listening, stop=stop, shared_ports=ports)
    finally:
        await app.close()


def _worker_header(index: int) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    value = str(index)

    async def add_header(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers[WORKER_HEADER] = value

    return add_header
