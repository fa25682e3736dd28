"""The asyncio driver of DPS over MQTT: session events → engine calls → response publishes.

Boringly thin (STYLE §3.4 habit 2): `MqttConnection` feeds bytes to a `ServerSession`,
dispatches its events, and turns each device request into one `DeviceEngine` call whose result
(or `DpsError`) becomes a QoS 1 publish on the response topic. No business rule lives here:
who may register, and how, is the engine's.

Byte transport is pluggable through `Sink` (write + close), so the same connection code runs on
the TLS listener (`MqttProtocol`, an `asyncio.Protocol` for `start_tls_server`) and inside a
WebSocket (websocket.py).

Decisions (docs/mqtt.md):
- Credentials are checked when the device publishes its request, not at CONNECT: CONNECT is
  accepted when the user name is well formed and names the client id, and a bad key, an
  expired token or an unknown ID scope is answered `res/401` with the DPS error body, as Azure
  does (protocol.md §3, azure-docs #43157). The engine attests on every request anyway, and the
  SDKs then report a parsable `ProvisioningServiceErrorDetails`.
- A CONNECT without a user name, or with one that is not `{idScope}/registrations/{id}/…`, is
  refused with CONNACK 4 (bad user name or password); a client id that differs from the user
  name's registration ID with CONNACK 2 (identifier rejected: ClientId must be the
  registration ID, protocol.md §3).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from cryptography import x509

from opendps.engine.api import (
    Credential,
    DeviceEngine,
    OperationStatus,
    OperationStatusRequest,
    RegisterRequest,
    SasCredential,
    X509Credential,
)
from opendps.model.errors import (
    INTERNAL_ERROR,
    DpsError,
    error_body,
    format_utc,
)
from opendps.observability.logging import log_event
from opendps.tls.server import EXTRA_PEER_CHAIN
from opendps.transports.bodies import encode_json, operation_body, parse_device_registration
from opendps.transports.mqtt.packets import ConnackCode, Connect
from opendps.transports.mqtt.session import (
    CONNECT_TIMEOUT_SECONDS,
    MAX_PACKET_BYTES,
    ConnectionClosed,
    ConnectReceived,
    DisconnectReceived,
    Event,
    PublishReceived,
    ServerSession,
    SessionState,
)
from opendps.transports.mqtt.topics import (
    RESPONSE_FILTER,
    DeviceIdentity,
    RegisterTopic,
    extract_rid,
    parse_request_topic,
    parse_username,
    response_topic,
)

__all__ = ["MqttConnection", "MqttProtocol", "MqttSettings", "Sink", "mqtt_protocol_factory"]

logger = logging.getLogger(__name__)

# Runs a coroutine as a background task (app.tasks.spawn, injected by app.wiring).
Spawn = Callable[[Coroutine[Any, Any, None], str], object]


class Sink(Protocol):
    """Where a connection's outbound bytes go (an asyncio transport, a WebSocket queue)."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class MqttSettings:
    max_packet_bytes: int = MAX_PACKET_BYTES
    connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS


class MqttConnection:
    """One device connection. Call `data_received` with its bytes and `connection_lost` at
    the end; everything else happens through `sink`."""

    def __init__(
        self,
        engine: DeviceEngine,
        sink: Sink,
        *,
        peer_chain: tuple[x509.Certificate, ...],
        spawn: Spawn,
        settings: MqttSettings,
        transport_name: str = "mqtt",
    ) -> None:
        self._engine = engine
        self._sink = sink
        self._chain = peer_chain
        self._spawn = spawn
        self._name = transport_name
        self._loop = asyncio.get_running_loop()
        self._session = ServerSession(
            self._loop.time(),
            allowed_filters=frozenset({RESPONSE_FILTER}),
            max_packet_bytes=settings.max_packet_bytes,
            connect_timeout=settings.connect_timeout_seconds,
        )
        self._identity: DeviceIdentity | None = None
        self._credential: Credential | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._schedule()

    # -- driven by the byte transport -----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._dispatch(self._session.receive_data(data, self._loop.time()))

    def connection_lost(self) -> None:
        self._closed = True
        self._session.close("connection lost")
        self._cancel_timer()

    # -- event dispatch (no await beyond this point) --------------------------------------------

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ConnectReceived):
                self._dispatch(self._on_connect(event.connect))
            elif isinstance(event, PublishReceived):
                self._spawn(self._answer(event), f"mqtt-request-{self._name}")
            elif isinstance(event, ConnectionClosed):
                log_event(logger, logging.INFO, "device.mqtt.closed", reason=event.reason)
            elif isinstance(event, DisconnectReceived):
                log_event(logger, logging.DEBUG, "device.mqtt.disconnected")
        self._flush()

    def _on_connect(self, connect: Connect) -> list[Event]:
        if connect.username is None:
            return self._session.refuse(ConnackCode.BAD_USERNAME_OR_PASSWORD, "no user name")
        try:
            identity = parse_username(connect.username)
        except DpsError as error:
            return self._session.refuse(ConnackCode.BAD_USERNAME_OR_PASSWORD, error.message)
        if identity.registration_id.lower() != connect.client_id.lower():
            return self._session.refuse(
                ConnackCode.IDENTIFIER_REJECTED, "client id is not the registration ID"
            )
        try:
            self._credential = _credential(connect.password, self._chain)
        except UnicodeDecodeError:
            return self._session.refuse(ConnackCode.BAD_USERNAME_OR_PASSWORD, "password not UTF-8")
        self._identity = identity
        return self._session.accept(self._loop.time())

    def _flush(self) -> None:
        data = self._session.data_to_send()
        if data and not self._closed:
            self._sink.write(data)
        if self._session.state is SessionState.CLOSED and not self._closed:
            self._closed = True
            self._sink.close()
        self._schedule()

    # -- requests ---------------------------------------------------------------------------

    async def _answer(self, event: PublishReceived) -> None:
        rid = extract_rid(event.topic)
        try:
            status = await self._call_engine(event)
            topic = response_topic(200 if status.is_terminal else 202, rid, status.retry_after)
            payload = encode_json(operation_body(status))
        except DpsError as error:
            topic, payload = self._error_answer(error, rid, event.topic)
        except Exception as error:  # a bug: answer like Azure, keep the trace in the log
            log_event(logger, logging.ERROR, "device.mqtt.internal_error", exc_info=error)
            topic, payload = self._error_answer(
                DpsError(INTERNAL_ERROR, "Internal error."), rid, event.topic
            )
        if self._session.state is not SessionState.CONNECTED:
            return  # the device left before its answer was ready
        if not self._session.publish(topic, payload):
            log_event(logger, logging.INFO, "device.mqtt.answer_dropped", reason="not subscribed")
        self._flush()

    async def _call_engine(self, event: PublishReceived) -> OperationStatus:
        request = parse_request_topic(event.topic)
        assert self._identity is not None  # requests arrive only after accept()
        identity = self._identity
        if isinstance(request, RegisterTopic):
            body = parse_device_registration(event.payload)
            return await self._engine.register(
                RegisterRequest(
                    id_scope=identity.id_scope,
                    registration_id=identity.registration_id,
                    credential=self._credential,
                    payload=body.payload,
                    body_registration_id=body.registration_id,
                )
            )
        # The poll's payload is a single space (Python, Node): nothing in it matters.
        return await self._engine.operation_status(
            OperationStatusRequest(
                id_scope=identity.id_scope,
                registration_id=identity.registration_id,
                operation_id=request.operation_id,
                credential=self._credential,
            )
        )

    def _error_answer(self, error: DpsError, rid: str, request_topic: str) -> tuple[str, bytes]:
        """The one place a DpsError becomes MQTT: `res/<http status>` + the DPS error body."""
        log_event(
            logger,
            logging.INFO,
            "device.mqtt.error",
            transport=self._name,
            topic=request_topic.partition("?")[0],
            status=error.http_status,
            error_code=error.error_code,
            error=error.message,
        )
        # The tracking ID exists only for error bodies; a success costs no uuid4 (an urandom call).
        body = error_body(
            error, tracking_id=str(uuid.uuid4()), timestamp_utc=format_utc(datetime.now(UTC))
        )
        return response_topic(error.http_status, rid, error.retry_after), encode_json(body)

    # -- timers -------------------------------------------------------------------------------

    def _schedule(self) -> None:
        """Keep one timer at or before the session's deadline.

        Every packet moves the keep-alive deadline later; re-arming on each one would create and
        cancel a timer per packet. A timer that fires early finds the deadline not yet due
        (`check_deadline` returns nothing) and is re-armed at the current one.
        """
        deadline = self._session.deadline
        if deadline is None or self._closed:
            self._cancel_timer()
            return
        if self._timer is not None and self._timer.when() <= deadline:
            return
        self._cancel_timer()
        self._timer = self._loop.call_at(deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        self._dispatch(self._session.check_deadline(self._loop.time()))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _credential(password: bytes | None, chain: tuple[x509.Certificate, ...]) -> Credential | None:
    """Password = SAS token; no password = the TLS client chain, if any (protocol.md §3)."""
    if password is not None:
        return SasCredential(password.decode("utf-8"))
    return X509Credential(chain) if chain else None


class MqttProtocol(asyncio.Protocol):
    """MQTT over the TLS front door: the inner protocol `start_tls_server` runs."""

    def __init__(self, engine: DeviceEngine, spawn: Spawn, settings: MqttSettings) -> None:
        self._engine = engine
        self._spawn = spawn
        self._settings = settings
        self._connection: MqttConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        chain = tuple(stream.get_extra_info(EXTRA_PEER_CHAIN) or ())
        self._connection = MqttConnection(
            self._engine, stream, peer_chain=chain, spawn=self._spawn, settings=self._settings
        )

    def data_received(self, data: bytes) -> None:
        if self._connection is not None:
            self._connection.data_received(data)

    def eof_received(self) -> bool:
        return False  # the peer is gone: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is not None:
            self._connection.connection_lost()


def mqtt_protocol_factory(
    engine: DeviceEngine, *, spawn: Spawn, settings: MqttSettings | None = None
) -> Callable[[], asyncio.Protocol]:
    """The `inner_factory` of `start_tls_server` for the MQTT port."""
    chosen = settings or MqttSettings()
    return lambda: MqttProtocol(engine, spawn, chosen)
