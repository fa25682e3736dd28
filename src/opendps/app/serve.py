"""`opendps serve`: bind the listeners, announce them, run until a signal, then drain.

Lifecycle:
1. app.wiring.build(settings) prepares the data dir, store and aiohttp application.
2. Listeners are bound through `bind_with_fallback` (ARCHITECTURE §2: a default port that
   cannot be bound moves to port + 8000; an explicit one never does).
3. state.json is written and the operator callback prints the banner.
4. SIGTERM or SIGINT: stop accepting, let in-flight requests finish within
   `--shutdown-timeout`, close the store, remove state.json, exit 0.

With `--workers N` (N > 1) app.workers supervises N such processes instead: it chooses the
ports, and each worker runs `run` with `shared_ports`, binding exactly those ports with
SO_REUSEPORT and leaving state.json to the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from aiohttp import web

from opendps.app import tasks
from opendps.app.config import MAX_PORT, PORT_FALLBACK_OFFSET, Settings, redact_database_url
from opendps.app.maintenance import prune_forever
from opendps.app.status import (
    Endpoints,
    ServerState,
    StatusDocument,
    endpoint_url,
    remove_state,
    service_connection_string,
    write_state,
)
from opendps.app.wiring import App, StartupError, amqp_limits, build, mqtt_settings
from opendps.observability.logging import log_event
from opendps.tls.server import TlsLimits, TlsServer, start_tls_server
from opendps.transports.amqp.adapter import amqp_protocol_factory
from opendps.transports.mqtt.adapter import mqtt_protocol_factory

logger = logging.getLogger(__name__)

# Bind errors that mean "this port is not for us" (taken, or privileged and we are not root):
# only these move a default port to its fallback. Anything else (a bad bind address) is fatal.
FALLBACK_ERRNOS = frozenset({errno.EACCES, errno.EADDRINUSE, errno.EPERM})
# Spawned background tasks get this long to end after the HTTP drain.
TASK_CANCEL_TIMEOUT_SECONDS = 5.0
# Once in-flight requests have finished (or the shutdown timeout passed), aiohttp gets this long
# for handlers that started in the meantime before it cancels them.
HANDLER_CANCEL_GRACE_SECONDS = 1.0
# After aiohttp has drained, only handshakes in progress and close_notify flushes remain on a
# listener; neither deserves more than this before its connection is aborted.
CONNECTION_CLOSE_GRACE_SECONDS = 2.0
HTTPS_LISTENER = "https"
MQTT_LISTENER = "mqtt"
AMQP_LISTENER = "amqp"


class Listener(Protocol):
    """What bind_with_fallback needs of a started server (TlsServer, asyncio.Server)."""

    @property
    def sockets(self) -> tuple[socket.socket, ...]: ...


ListenerT = TypeVar("ListenerT", bound=Listener)


@dataclass(frozen=True, slots=True)
class BoundPort(Generic[ListenerT]):
    server: ListenerT
    port: int
    # The prominent message shown when the port fell back, else None.
    fallback: str | None


@dataclass(frozen=True, slots=True)
class ListenerPorts:
    """The ports chosen for every listener (by the supervisor of several workers)."""

    https: int
    mqtt: int
    amqp: int


@dataclass(frozen=True, slots=True)
class RunningServerInfo:
    """What the operator callback receives once every listener is bound."""

    status: StatusDocument
    pid: int
    fallbacks: tuple[str, ...]


def _bound_port(server: Listener) -> int:
    """The port the OS chose for a server started on port 0."""
    return int(server.sockets[0].getsockname()[1])


async def bind_with_fallback(
    listener: str,
    port: int,
    *,
    explicit: bool,
    start: Callable[[int], Awaitable[ListenerT]],
) -> BoundPort[ListenerT]:
    """Start a listener on `port`, or on `port + 8000` if `port` is a default that is unusable.

    `start(port)` binds and returns the server (port 0 asks the OS for a free port). Reused by
    every listener (HTTPS now; MQTT and AMQP when they arrive). Raises StartupError.
    """
    try:
        server = await start(port)
        return BoundPort(server, port or _bound_port(server), None)
    except OSError as err:
        if explicit or port == 0 or err.errno not in FALLBACK_ERRNOS:
            raise StartupError(
                f"cannot listen for {listener} on port {port}: {err.strerror or err}"
            ) from None
        first_error = err.strerror or str(err)
    fallback = port + PORT_FALLBACK_OFFSET
    if fallback > MAX_PORT:
        raise StartupError(f"cannot listen for {listener} on port {port}: {first_error}")
    try:
        server = await start(fallback)
    except OSError as err:
        raise StartupError(
            f"cannot listen for {listener} on port {port} ({first_error}) "
            f"nor on its fallback {fallback} ({err.strerror or err})"
        ) from None
    log_event(
        logger,
        logging.WARNING,
        "listener.port_fallback",
        listener=listener,
        port=port,
        fallback=fallback,
        reason=first_error,
    )
    message = f"{listener.upper()} port {port} could not be bound ({first_error}); listening on {fallback} instead."
    return BoundPort(server, fallback, message)


def status_document(
    app: App, https_port: int, mqtt_port: int | None = None, amqp_port: int | None = None
) -> StatusDocument:
    """The status of a running server: the bound ports (the configured MQTT/AMQP port when
    one is not given)."""
    settings = app.settings
    host = settings.primary_host
    policy = app.default_instance.owner_policy
    connection_string = (
        service_connection_string(host, https_port, policy.name, policy.primary_key)
        if policy
        else None
    )
    return StatusDocument(
        id_scope=app.default_instance.instance.id_scope,
        service_connection_string=connection_string,
        ca_certificate=app.data_dir.pki.ca_certificate,
        endpoints=Endpoints(
            https=endpoint_url("https", host, https_port),
            mqtt=endpoint_url("mqtts", host, mqtt_port or settings.mqtt_port),
            amqp=endpoint_url("amqps", host, amqp_port or settings.amqp_port),
        ),
        data_dir=settings.data_dir,
        database=redact_database_url(settings.database),
    )


def tls_limits(settings: Settings) -> TlsLimits:
    return TlsLimits(
        handshake_timeout_seconds=settings.handshake_timeout,
        max_connections=settings.max_connections,
    )


async def _start_https(
    app: App, runner: web.AppRunner, port: int, *, reuse_port: bool = False
) -> TlsServer:
    # aiohttp's low-level server is the protocol factory that runs on each TLS connection.
    assert runner.server is not None, "runner.setup() comes first"
    return await start_tls_server(
        runner.server,
        host=app.settings.bind,
        port=port,
        context=app.tls_context,
        limits=tls_limits(app.settings),
        reuse_port=reuse_port,
        on_connection_change=app.connection_counter(HTTPS_LISTENER),
    )


async def _start_mqtt(app: App, port: int, *, reuse_port: bool = False) -> TlsServer:
    return await start_tls_server(
        mqtt_protocol_factory(app.engine, spawn=tasks.spawn, settings=mqtt_settings(app.settings)),
        host=app.settings.bind,
        port=port,
        context=app.tls_context,
        limits=tls_limits(app.settings),
        reuse_port=reuse_port,
        on_connection_change=app.connection_counter(MQTT_LISTENER),
    )


async def _start_amqp(app: App, port: int, *, reuse_port: bool = False) -> TlsServer:
    return await start_tls_server(
        amqp_protocol_factory(app.engine, spawn=tasks.spawn, limits=amqp_limits(app.settings)),
        host=app.settings.bind,
        port=port,
        context=app.tls_context,
        limits=tls_limits(app.settings),
        reuse_port=reuse_port,
        on_connection_change=app.connection_counter(AMQP_LISTENER),
    )


async def run(
    app: App,
    *,
    on_ready: Callable[[RunningServerInfo], None],
    stop: asyncio.Event | None = None,
    shared_ports: ListenerPorts | None = None,
) -> int:
    """Serve `app` until `stop` is set or SIGTERM/SIGINT arrives; return the exit code.

    `shared_ports` makes this one of several workers (app.workers): every listener binds
    exactly its given port with SO_REUSEPORT (no fallback; the supervisor chose the ports),
    and state.json is left to the supervisor. Raises StartupError when a listener cannot be
    bound.
    """
    settings = app.settings
    stop = stop or asyncio.Event()
    shared = shared_ports is not None
    runner = web.AppRunner(
        app.web_app, handle_signals=False, shutdown_timeout=HANDLER_CANCEL_GRACE_SECONDS
    )
    await runner.setup()
    servers: list[TlsServer] = []
    wrote_state = False
    # Signals are caught from the start, so a SIGTERM during startup also ends in a clean drain.
    with _stop_on_signals(stop):
        try:
            ports = shared_ports or ListenerPorts(
                settings.https_port, settings.mqtt_port, settings.amqp_port
            )
            https = await bind_with_fallback(
                HTTPS_LISTENER,
                ports.https,
                explicit=shared or settings.is_explicit("https_port"),
                start=lambda port: _start_https(app, runner, port, reuse_port=shared),
            )
            servers.append(https.server)
            mqtt = await bind_with_fallback(
                MQTT_LISTENER,
                ports.mqtt,
                explicit=shared or settings.is_explicit("mqtt_port"),
                start=lambda port: _start_mqtt(app, port, reuse_port=shared),
            )
            servers.append(mqtt.server)
            amqp = await bind_with_fallback(
                AMQP_LISTENER,
                ports.amqp,
                explicit=shared or settings.is_explicit("amqp_port"),
                start=lambda port: _start_amqp(app, port, reuse_port=shared),
            )
            servers.append(amqp.server)
            status = status_document(app, https.port, mqtt.port, amqp.port)
            if not shared:
                write_state(
                    settings.data_dir,
                    ServerState(status, os.getpid(), app.data_dir.admin_key_file),
                )
                wrote_state = True
            log_event(
                logger,
                logging.INFO,
                "server.started",
                https=status.endpoints.https,
                mqtt=status.endpoints.mqtt,
                amqp=status.endpoints.amqp,
                id_scope=status.id_scope,
            )
            fallbacks = tuple(bound.fallback for bound in (https, mqtt, amqp) if bound.fallback)
            on_ready(RunningServerInfo(status, os.getpid(), fallbacks))
            # Everything built so far (modules, settings, caches, the app) lives as long as the
            # process: moved out of the collector's generations, full collections during load
            # no longer walk it (16% of server CPU in a 1M import; docs/performance.md).
            gc.freeze()
            pruning = tasks.spawn(
                prune_forever(
                    app.store,
                    app.context.clock,
                    operation_retention_seconds=settings.operation_retention,
                ),
                "prune operations and TPM challenges",
            )
            await stop.wait()
            log_event(logger, logging.INFO, "server.stopping")
            # Housekeeping is not in-flight work: it must not hold up the drain.
            pruning.cancel()
        finally:
            await _drain(app, runner, servers)
            if wrote_state:
                remove_state(settings.data_dir)
    return 0


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):
            # Not the main thread (or Windows): the caller stops us through `stop`.
            pass
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def _drain(app: App, runner: web.AppRunner, servers: list[TlsServer]) -> None:
    """Stop accepting, wait for in-flight requests, then close every connection."""
    for server in servers:
        server.close()
    timeout = app.settings.shutdown_timeout
    log_event(
        logger,
        logging.INFO,
        "server.draining",
        in_flight=app.requests.active,
        timeout_seconds=timeout,
    )
    # Connections keep reading while requests finish (a body may still be arriving); each
    # response now closes its connection.
    app.requests.draining = True
    deadline = asyncio.get_running_loop().time() + timeout
    if not await app.requests.wait_idle(timeout):
        log_event(logger, logging.WARNING, "server.drain_timeout", in_flight=app.requests.active)
    # MQTT and AMQP requests, and registrations waiting on a webhook, run as spawned tasks:
    # let them commit and answer within the same budget, while their connections are open.
    remaining = max(0.0, deadline - asyncio.get_running_loop().time())
    if not await tasks.wait_pending(remaining):
        log_event(logger, logging.WARNING, "server.drain_timeout", tasks=len(tasks.pending()))
    # Now aiohttp closes the idle connections and cancels what is still running.
    await runner.cleanup()
    for server in servers:
        try:
            await asyncio.wait_for(server.wait_closed(), CONNECTION_CLOSE_GRACE_SECONDS)
        except TimeoutError:
            server.abort_all()
    await tasks.cancel_pending(TASK_CANCEL_TIMEOUT_SECONDS)
    log_event(logger, logging.INFO, "server.stopped")


async def serve(settings: Settings, *, on_ready: Callable[[RunningServerInfo], None]) -> int:
    """Build the application from `settings` and run it (see `run`)."""
    app = await build(settings)
    try:
        return await run(app, on_ready=on_ready)
    finally:
        await app.close()


def main(settings: Settings, *, on_ready: Callable[[RunningServerInfo], None]) -> int:
    """Run `serve` on uvloop (the standard loop on Windows), or supervise `settings.workers`
    worker processes (app.workers). Raises StartupError."""
    if settings.workers > 1:
        from opendps.app.workers import supervise  # imports this module: loaded when used

        return supervise(settings, on_ready=on_ready)
    if sys.platform == "win32":
        return asyncio.run(serve(settings, on_ready=on_ready))
    import uvloop

    return int(uvloop.run(serve(settings, on_ready=on_ready)))
