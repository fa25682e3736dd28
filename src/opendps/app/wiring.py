"""`build(settings) -> App`: the one place that constructs OpenDPS and names concrete backends.

Everything below receives its dependencies from here (STYLE §3.4 habit 9): the store is chosen
by the database URL, the clock and id generator are the real ones, metrics live in a registry
owned by this App, and the aiohttp application gets every route of the HTTPS port.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from OpenSSL import SSL
from sqlalchemy.exc import SQLAlchemyError

from opendps.admin_api.routes import add_admin_routes
from opendps.allocation.custom import WebhookAllocator
from opendps.allocation.geo_latency import LatencyTable
from opendps.app.bootstrap import (
    DataDir,
    DefaultInstance,
    ensure_default_instance,
    prepare_data_dir,
)
from opendps.app.config import Settings, redact_database_url
from opendps.app.devpki import PkiError
from opendps.app.tasks import spawn
from opendps.engine.api import EngineSettings
from opendps.engine.ports import Clock, IdGenerator, RandomIdGenerator, SystemClock
from opendps.engine.register import ProvisioningEngine
from opendps.hubs.builtin import builtin_connector_factory
from opendps.hubs.interface import HubConnectors
from opendps.model.hub import HubKind
from opendps.observability.logging import log_event
from opendps.observability.metrics import CONTENT_TYPE, Metrics
from opendps.service_api.context import ServiceContext, ServiceLimits
from opendps.service_api.http import create_http_middleware
from opendps.service_api.routes import add_service_routes
from opendps.store.interface import Store
from opendps.store.migrate import SchemaTooNewError
from opendps.store.postgres import open_postgres_store
from opendps.store.sqlite import open_sqlite_store
from opendps.tls.contexts import build_server_context
from opendps.transports.amqp.driver import AmqpLimits
from opendps.transports.amqp.websocket import AMQP_SUBPROTOCOL, amqp_websocket_handler
from opendps.transports.http.routes import add_device_routes
from opendps.transports.mqtt.adapter import MqttSettings
from opendps.transports.mqtt.websocket import MQTT_SUBPROTOCOL, mqtt_websocket_handler
from opendps.transports.websocket import SubprotocolHandler, add_websocket_route

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
# The health check is one indexed lookup; a store that needs longer than this for it is not
# serving devices either, and the prober gets a 503 instead of a hanging request.
HEALTH_STORE_TIMEOUT_SECONDS = 2.0
POSTGRES_SCHEMES = ("postgresql:", "postgres:", "postgresql+asyncpg:")
SQLITE_PREFIXES = ("sqlite+aiosqlite:///", "sqlite:///")
# Route names of the DPS service API start with this (service_api/routes.py).
SERVICE_ROUTE_PREFIX = "dps."
# Connection-gauge label of MQTT over WebSockets (the TLS listeners are labelled by serve.py).
MQTT_WS_LISTENER = "mqtt_ws"
AMQP_WS_LISTENER = "amqp_ws"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class App:
    """A built OpenDPS process, ready for app.serve to bind its listeners."""

    settings: Settings
    data_dir: DataDir
    store: Store
    context: ServiceContext
    default_instance: DefaultInstance
    metrics: Metrics
    requests: RequestTracker
    tls_context: SSL.Context
    web_app: web.Application
    engine: ProvisioningEngine
    webhook_session: aiohttp.ClientSession

    def connection_counter(self, listener: str) -> Callable[[int], None]:
        """The TLS server's `on_connection_change(+1 | -1)` callback for `listener`'s gauge."""

        def changed(delta: int) -> None:
            if delta > 0:
                self.metrics.connection_opened(listener)
            else:
                self.metrics.connection_closed(listener)

        return changed

    async def close(self) -> None:
        await self.webhook_session.close()
        await self.store.close()


async def open_store(database: str) -> Store:
    """Open and migrate the store the URL names: PostgreSQL or a SQLite file."""
    if database.startswith(POSTGRES_SCHEMES):
        return await open_postgres_store(database)
    path = database
    for prefix in SQLITE_PREFIXES:
        path = path.removeprefix(prefix)
    return await open_sqlite_store(Path(path))


class StartupError(Exception):
    """The server cannot start; the message tells the operator why and what to change."""


async def build(settings: Settings) -> App:
    """Prepare the data dir, open the store, bootstrap the default instance, build the web app.

    Raises StartupError when the data dir, its PKI files or the database cannot be used.
    """
    clock, ids = SystemClock(), RandomIdGenerator()
    try:
        data_dir = prepare_data_dir(settings.data_dir, settings.public_host, clock)
        pki = data_dir.pki
        tls_context = build_server_context(pki.server_certificate, pki.server_key)
    except (PkiError, OSError, ValueError) as err:
        raise StartupError(f"cannot use the data dir {settings.data_dir}: {err}") from None
    store, default = await _open_bootstrapped_store(settings, clock, ids)
    context = ServiceContext(
        store=store,
        clock=clock,
        ids=ids,
        public_hosts=settings.public_host,
        default_instance_name=default.instance.name,
        admin_key=data_dir.admin_key,
        limits=ServiceLimits(max_body_bytes=settings.max_body_bytes),
    )
    metrics, requests = Metrics(), RequestTracker()
    web_app = build_web_app(
        context, metrics, max_body_bytes=settings.max_body_bytes, requests=requests
    )
    # The custom-allocation webhook client lives as long as the process; App.close closes it.
    webhook_session = aiohttp.ClientSession()
    engine = build_engine(settings, context, metrics, webhook_session)
    context.change_listeners.append(engine.invalidate_caches)
    add_device_routes(web_app, engine)
    add_websocket_route(
        web_app,
        websocket_subprotocols(settings, engine, metrics),
        # One WebSocket message carries one MQTT packet or one AMQP frame.
        max_message_bytes=max(settings.mqtt_max_packet_bytes, settings.amqp_max_frame_bytes),
    )
    return App(
        settings,
        data_dir,
        store,
        context,
        default,
        metrics,
        requests,
        tls_context,
        web_app,
        engine,
        webhook_session,
    )


def build_engine(
    settings: Settings,
    context: ServiceContext,
    metrics: Metrics,
    webhook_session: aiohttp.ClientSession,
) -> ProvisioningEngine:
    """The registration pipeline over the store and the hub connectors (all built-in for now)."""
    store, clock, ids = context.store, context.clock, context.ids
    rate = settings.instance_registration_rate
    engine_settings = EngineSettings(
        poll_limit=settings.device_poll_limit,
        tpm_challenge_ttl_seconds=settings.tpm_challenge_ttl,
        instance_registrations_per_second=float(rate) if rate > 0 else None,
        instance_registration_burst=max(rate, 1),
        node_region=settings.region,
        region_latencies_ms=parse_region_latencies(settings.region_latency),
    )
    allocator = WebhookAllocator(
        webhook_session,
        timeout_seconds=settings.webhook_timeout,
        verify_tls=settings.webhook_tls_verify == "on",
    )
    # The admin and service APIs make dry-run calls with the same client (engine/explain.py).
    context.custom_allocator = allocator
    context.allocation_latency = LatencyTable.from_pairs(
        engine_settings.node_region, engine_settings.region_latencies_ms
    )
    hubs = HubConnectors({HubKind.BUILTIN: builtin_connector_factory(store, clock, ids)})
    return ProvisioningEngine(
        store,
        hubs,
        clock=clock,
        ids=ids,
        spawn=spawn,
        settings=engine_settings,
        custom_allocator=allocator,
        metrics=metrics,
    )


def mqtt_settings(settings: Settings) -> MqttSettings:
    return MqttSettings(
        max_packet_bytes=settings.mqtt_max_packet_bytes,
        connect_timeout_seconds=settings.mqtt_connect_timeout,
    )


def websocket_subprotocols(
    settings: Settings, engine: ProvisioningEngine, metrics: Metrics
) -> dict[str, SubprotocolHandler]:
    """The one table of `/$iothub/websocket`: lower-case subprotocol → handler (AMQP over
    WebSockets adds `amqpwsb10` here)."""

    def count(delta: int) -> None:
        if delta > 0:
            metrics.connection_opened(MQTT_WS_LISTENER)
        else:
            metrics.connection_closed(MQTT_WS_LISTENER)

    def count_amqp(delta: int) -> None:
        if delta > 0:
            metrics.connection_opened(AMQP_WS_LISTENER)
        else:
            metrics.connection_closed(AMQP_WS_LISTENER)

    return {
        MQTT_SUBPROTOCOL: mqtt_websocket_handler(
            engine, spawn=spawn, settings=mqtt_settings(settings), on_connection_change=count
        ),
        AMQP_SUBPROTOCOL: amqp_websocket_handler(
            engine, spawn=spawn, limits=amqp_limits(settings), on_connection_change=count_amqp
        ),
    }


def amqp_limits(settings: Settings) -> AmqpLimits:
    return AmqpLimits(
        max_frame_bytes=settings.amqp_max_frame_bytes,
        max_message_bytes=settings.amqp_max_message_bytes,
        idle_timeout_seconds=settings.amqp_idle_timeout,
        open_timeout_seconds=settings.amqp_open_timeout,
    )


def parse_region_latencies(entries: tuple[str, ...]) -> tuple[tuple[str, str, float], ...]:
    """`REGION_A:REGION_B:MILLISECONDS` entries of --region-latency. Raises StartupError."""
    parsed: list[tuple[str, str, float]] = []
    for entry in entries:
        parts = entry.rsplit(":", 2)
        try:
            if len(parts) != 3 or not parts[0] or not parts[1]:
                raise ValueError(entry)
            parsed.append((parts[0], parts[1], float(parts[2])))
        except ValueError:
            raise StartupError(
                f"--region-latency {entry!r}: expected REGION_A:REGION_B:MILLISECONDS"
            ) from None
    return tuple(parsed)


async def _open_bootstrapped_store(
    settings: Settings, clock: Clock, ids: IdGenerator
) -> tuple[Store, DefaultInstance]:
    try:
        store = await open_store(settings.database)
    except (OSError, SQLAlchemyError, SchemaTooNewError) as err:
        # Driver messages name the host and database, never the password.
        reason = str(err).split("\n", 1)[0]
        shown = redact_database_url(settings.database)
        raise StartupError(f"cannot use the database {shown}: {reason}") from None
    try:
        default = await ensure_default_instance(
            store, clock, ids, service_host=settings.primary_host
        )
    except BaseException:
        await store.close()
        raise
    return store, default


class RequestTracker:
    """Counts the requests being handled, so that a shutdown can wait for them (serve.py).

    aiohttp's own shutdown stops reading from every connection at once, which would cut off a
    request whose body is still arriving; serve.py therefore waits here first, while the
    connections still read, and only then lets aiohttp close them.
    """

    def __init__(self) -> None:
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    @property
    def active(self) -> int:
        return self._active

    def enter(self) -> None:
        self._active += 1
        self._idle.clear()

    def leave(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    async def wait_idle(self, grace_seconds: float) -> bool:
        """Wait until no request is being handled; False if `grace_seconds` passed first."""
        try:
            async with asyncio.timeout(grace_seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


def build_web_app(
    context: ServiceContext,
    metrics: Metrics,
    *,
    max_body_bytes: int,
    requests: RequestTracker | None = None,
) -> web.Application:
    """Every route of the HTTPS port under the shared middleware.

    `requests` counts in-flight requests for a graceful shutdown (tests may leave it out).
    """
    requests = requests or RequestTracker()
    http_middleware = create_http_middleware(context.clock)
    web_app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[_accounting_middleware(metrics, requests), http_middleware],
    )
    web_app.router.add_get(HEALTH_PATH, _health_handler(context))
    web_app.router.add_get(METRICS_PATH, _metrics_handler(metrics))
    add_service_routes(web_app, context)
    add_admin_routes(web_app, context)
    return web_app


def _route_label(request: web.Request) -> str:
    # The route's name or pattern, never the concrete path: IDs in paths would make one time
    # series per device.
    route = request.match_info.route
    if route.name:
        return route.name
    return route.resource.canonical if route.resource is not None else "<unmatched>"


def _outcome(status: int) -> str:
    return "success" if status < 400 else ("client_error" if status < 500 else "server_error")


def _accounting_middleware(metrics: Metrics, requests: RequestTracker) -> Middleware:
    # Outermost, so it times the error rendering too and sees the status actually sent.
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        requests.enter()
        try:
            response = await handler(request)
            status = response.status
            if requests.draining:
                response.force_close()  # no further request on this connection
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            requests.leave()
            route = _route_label(request)
            metrics.observe_request(route, request.method, status, time.perf_counter() - started)
            if route.startswith(SERVICE_ROUTE_PREFIX):
                metrics.count_service_operation(route, _outcome(status))

    return middleware


def _health_handler(context: ServiceContext) -> Handler:
    async def healthz(request: web.Request) -> web.StreamResponse:
        try:
            async with asyncio.timeout(HEALTH_STORE_TIMEOUT_SECONDS):
                await context.store.get_instance_by_name(context.default_instance_name)
        except Exception as err:  # any store failure means "not healthy", whatever its type
            log_event(logger, logging.WARNING, "health.store_unreachable", error=type(err).__name__)
            return web.json_response({"status": "unavailable", "store": "unreachable"}, status=503)
        return web.json_response({"status": "ok", "store": "ok"})

    return healthz


def _metrics_handler(metrics: Metrics) -> Handler:
    async def serve_metrics(request: web.Request) -> web.StreamResponse:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    return serve_metrics
