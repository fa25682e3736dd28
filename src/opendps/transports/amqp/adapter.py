"""The asyncio driver of DPS over AMQP: driver events → engine calls → reply messages.

Boringly thin (STYLE §3.4 habit 2): `AmqpConnection` feeds bytes to the sans-I/O
`AmqpServerConnection`, turns each `RequestReceived` into one `DeviceEngine` call, and answers
with a reply message or a rejected delivery. No business rule lives here.

Bytes go through a `Sink` (write + close), so the same code runs on the TLS port
(`AmqpProtocol`, the inner protocol of `start_tls_server`) and inside a WebSocket
(websocket.py).

Decisions (docs/amqp.md):
- Credentials are checked per request by the engine, not in SASL: SASL PLAIN succeeds whenever
  the response is well formed, and a wrong key, expired token or unknown ID scope is answered
  by rejecting the request with `amqp:unauthorized-access` and the DPS error JSON. A SASL
  failure reaches the Node client only as "connection disconnected" (clients.md §3d).
- The credential is the PLAIN password (a SAS token) when SASL PLAIN was used, else the TLS
  client chain (X.509 devices send no SASL layer at all, protocol.md §4.1).
- TPM devices attest inside SASL (protocol.md §4.4): the driver speaks the mechanism, this
  module asks the engine for the challenge blob and to check the token the device signed with
  it. A refusal ends SASL and closes the connection, as a malformed PLAIN frame does: outcome
  `auth`, `sys-temp` when the client should retry later, `sys` for our own failures. After that the token is the connection's SAS credential, exactly as a PLAIN
  password (the engine knows from the enrollment that it is a TPM device); the register body's
  `tpm` object is not needed here.
- The AMQP open timeout runs from connect to the client's OPEN, so it also ends a SASL exchange
  that stalls (the client's, or an engine call that never returns).
- Scope and registration ID come from the link address the request arrived on.
"""

from __future__ import annotations

import asyncio
import json
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
    TpmChallengeRequest,
    TpmTokenCheck,
    X509Credential,
)
from opendps.model.errors import (
    BAD_REQUEST,
    INTERNAL_ERROR,
    INVALID_BODY,
    DpsError,
    error_body,
    format_utc,
)
from opendps.observability.logging import log_event, request_id
from opendps.tls.server import EXTRA_PEER_CHAIN
from opendps.transports.amqp.driver import (
    DEFAULT_AMQP_LIMITS,
    OPERATION_TYPE,
    AmqpLimits,
    AmqpServerConnection,
    ConnectionFailed,
    DriverEvent,
    RequestReceived,
    TpmKeyRequested,
    TpmTokenPresented,
)
from opendps.transports.amqp.sasl import PLAIN, SaslCode
from opendps.transports.amqp.tpm_sasl import TPM
from opendps.transports.bodies import encode_json, operation_body, parse_device_registration

__all__ = ["AmqpConnection", "AmqpProtocol", "Sink", "amqp_protocol_factory", "error_condition"]

logger = logging.getLogger(__name__)

# Runs a coroutine as a background task (app.tasks.spawn, injected by app.wiring).
Spawn = Callable[[Coroutine[Any, Any, None], str], object]

REGISTER = "iotdps-register"
GET_OPERATION_STATUS = "iotdps-get-operationstatus"
STATUS = "iotdps-status"
RETRY_AFTER = "retry-after"

# DPS error → AMQP error condition, by HTTP status (protocol.md §4.3; Node's translateError:
# unauthorized → UnauthorizedError, not-found → NotFound, internal-error and throttling are
# retried by the client, the others fail the registration).
_CONDITIONS = {
    400: "com.microsoft:argument-error",
    401: "amqp:unauthorized-access",
    403: "amqp:unauthorized-access",
    404: "amqp:not-found",
    409: "com.microsoft:precondition-failed",
    412: "com.microsoft:precondition-failed",
    413: "amqp:link:message-size-exceeded",
    429: "com.microsoft:device-container-throttled",
    504: "com.microsoft:timeout",
}
INTERNAL_CONDITION = "amqp:internal-error"

# Mechanisms whose password is a SAS token to present with every request.
_SAS_MECHANISMS = frozenset((PLAIN, TPM))


def error_condition(error: DpsError) -> str:
    """The AMQP error condition a DPS error is reported with."""
    return _CONDITIONS.get(error.http_status, INTERNAL_CONDITION)


def sasl_outcome(error: DpsError) -> SaslCode:
    """The sasl-outcome code a DPS error ends a TPM SASL exchange with: `sys-temp` where the
    client should try again later (throttled, unavailable), `sys` for our own failures,
    `auth` for everything the device got wrong (AMQP 1.0 §5.3.3.6)."""
    status = error.http_status
    if status in (429, 503, 504):
        return SaslCode.SYS_TEMP
    if status >= 500:
        return SaslCode.SYS
    return SaslCode.AUTH


class Sink(Protocol):
    """Where a connection's outbound bytes go (an asyncio transport, a WebSocket queue)."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Reply:
    body: bytes
    properties: dict[str, Any]


class AmqpConnection:
    """One device connection. Call `data_received` with its bytes and `connection_lost` at
    the end; everything else happens through `sink`."""

    def __init__(
        self,
        engine: DeviceEngine,
        sink: Sink,
        *,
        peer_chain: tuple[x509.Certificate, ...],
        spawn: Spawn,
        limits: AmqpLimits = DEFAULT_AMQP_LIMITS,
        transport_name: str = "amqp",
    ) -> None:
        self._engine = engine
        self._sink = sink
        self._chain = peer_chain
        self._spawn = spawn
        self._name = transport_name
        self._loop = asyncio.get_running_loop()
        self._driver = AmqpServerConnection(limits)
        self._closed = False
        self._tick_timer: asyncio.TimerHandle | None = None
        self._open_timer: asyncio.TimerHandle | None = self._loop.call_later(
            limits.open_timeout_seconds, self._on_open_timeout
        )

    # -- driven by the byte transport -------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._closed:
            self._dispatch(self._driver.receive_data(data))

    def connection_lost(self) -> None:
        self._closed = True
        self._cancel_timers()

    # -- event dispatch (no await beyond this point) -----------------------------------------

    def _dispatch(self, events: list[DriverEvent]) -> None:
        for event in events:
            if isinstance(event, RequestReceived):
                self._spawn(self._answer(event), f"amqp-request-{self._name}")
            elif isinstance(event, TpmKeyRequested):
                self._spawn(self._tpm_challenge(event), f"amqp-tpm-{self._name}")
            elif isinstance(event, TpmTokenPresented):
                self._spawn(self._tpm_token(event), f"amqp-tpm-{self._name}")
            elif isinstance(event, ConnectionFailed):
                log_event(
                    logger,
                    logging.INFO,
                    "device.amqp.closed",
                    transport=self._name,
                    reason=event.reason,
                )
        if self._driver.opened and self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None
        self._flush()

    def _flush(self) -> None:
        if self._closed:
            return
        # proton's idle-timeout check and heartbeats run at the deadline its tick() names.
        events, deadline = self._driver.tick(self._loop.time())
        data = self._driver.data_to_send()
        if data:
            self._sink.write(data)
        if self._driver.ended:
            self._closed = True
            self._cancel_timers()
            self._sink.close()
            return
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        if deadline > 0:
            self._tick_timer = self._loop.call_at(deadline, self._on_tick)
        if events:
            self._dispatch(events)  # an idle timeout: proton closed the connection

    # -- requests -------------------------------------------------------------------------

    async def _answer(self, event: RequestReceived) -> None:
        tracking_id = str(uuid.uuid4())
        token = request_id.set(tracking_id)
        try:
            status = await self._call_engine(event)
            reply = _reply(event, status)
        except DpsError as error:
            self._reject(event, error, tracking_id)
            return
        except Exception as error:  # a bug: answer like Azure, keep the trace in the log
            log_event(logger, logging.ERROR, "device.amqp.internal_error", exc_info=error)
            self._reject(event, DpsError(INTERNAL_ERROR, "Internal error."), tracking_id)
            return
        finally:
            request_id.reset(token)
        if not self._closed:
            self._driver.reply(event.request_id, reply.body, reply.properties)
            self._flush()

    async def _call_engine(self, event: RequestReceived) -> OperationStatus:
        address, credential = event.address, self._credential()
        if event.operation_type == REGISTER:
            body = parse_device_registration(_data_section(event.body))
            return await self._engine.register(
                RegisterRequest(
                    id_scope=address.id_scope,
                    registration_id=address.registration_id,
                    credential=credential,
                    payload=body.payload,
                    body_registration_id=body.registration_id,
                )
            )
        if event.operation_type == GET_OPERATION_STATUS and event.operation_id:
            # The poll's body differs per SDK (Node "", C the registration JSON): ignored.
            return await self._engine.operation_status(
                OperationStatusRequest(
                    id_scope=address.id_scope,
                    registration_id=address.registration_id,
                    operation_id=event.operation_id,
                    credential=credential,
                )
            )
        raise DpsError(
            BAD_REQUEST,
            f"{OPERATION_TYPE} must be {REGISTER} or {GET_OPERATION_STATUS} "
            "(with iotdps-operation-id).",
        )

    def _credential(self) -> Credential | None:
        identity = self._driver.identity
        if identity is not None and identity.mechanism in _SAS_MECHANISMS and identity.password:
            return SasCredential(identity.password)
        return X509Credential(self._chain) if self._chain else None

    def _reject(self, event: RequestReceived, error: DpsError, tracking_id: str) -> None:
        """The one place a DpsError becomes AMQP: a rejected delivery whose error carries the
        condition, the DPS error JSON as description and `retry-after` in info (§4.3)."""
        condition = error_condition(error)
        log_event(
            logger,
            logging.INFO,
            "device.amqp.error",
            transport=self._name,
            operation=event.operation_type,
            condition=condition,
            error_code=error.error_code,
            error=error.message,
        )
        if self._closed:
            return
        body = error_body(
            error, tracking_id=tracking_id, timestamp_utc=format_utc(datetime.now(UTC))
        )
        info = {RETRY_AFTER: str(error.retry_after)} if error.retry_after is not None else None
        self._driver.reject(event.request_id, condition, json.dumps(body), info)
        self._flush()

    # -- TPM SASL (protocol.md §4.4) -------------------------------------------------------

    async def _tpm_challenge(self, event: TpmKeyRequested) -> None:
        keys = event.keys
        request = TpmChallengeRequest(
            id_scope=keys.id_scope,
            registration_id=keys.registration_id,
            endorsement_key=keys.endorsement_key,
            storage_root_key=keys.storage_root_key,
        )
        token = request_id.set(str(uuid.uuid4()))
        try:
            blob = await self._engine.tpm_challenge(request)
        except Exception as error:
            self._tpm_refused("challenge", error)
            return
        finally:
            request_id.reset(token)
        if not self._closed:
            self._dispatch(self._driver.tpm_authentication_key(blob))

    async def _tpm_token(self, event: TpmTokenPresented) -> None:
        check = TpmTokenCheck(event.id_scope, event.registration_id, event.token)
        token = request_id.set(str(uuid.uuid4()))
        try:
            await self._engine.check_tpm_token(check)
        except Exception as error:
            self._tpm_refused("token", error)
            return
        finally:
            request_id.reset(token)
        if not self._closed:
            self._dispatch(self._driver.tpm_accept())

    def _tpm_refused(self, step: str, error: Exception) -> None:
        """An engine call of the TPM exchange failed: end SASL with the matching outcome."""
        if isinstance(error, DpsError):
            code = sasl_outcome(error)
            log_event(
                logger,
                logging.INFO,
                "device.amqp.tpm_refused",
                transport=self._name,
                step=step,
                outcome=code.name.lower(),
                error_code=error.error_code,
                error=error.message,
            )
        else:  # a bug: refuse as a server failure, keep the trace in the log
            code = SaslCode.SYS
            log_event(logger, logging.ERROR, "device.amqp.internal_error", exc_info=error)
        if not self._closed:
            self._dispatch(self._driver.sasl_fail(f"TPM {step} refused", code))

    # -- timers ---------------------------------------------------------------------------

    def _on_tick(self) -> None:
        self._tick_timer = None
        self._flush()

    def _on_open_timeout(self) -> None:
        self._open_timer = None
        if self._closed or self._driver.opened:
            return
        log_event(
            logger, logging.INFO, "device.amqp.closed", transport=self._name, reason="open timeout"
        )
        self._closed = True
        self._cancel_timers()
        self._sink.close()

    def _cancel_timers(self) -> None:
        for timer in (self._tick_timer, self._open_timer):
            if timer is not None:
                timer.cancel()
        self._tick_timer = self._open_timer = None


def _reply(event: RequestReceived, status: OperationStatus) -> _Reply:
    """A `RegistrationOperationStatus` as a data section, with the properties clients read."""
    properties: dict[str, Any] = {OPERATION_TYPE: event.operation_type, STATUS: str(status.status)}
    if status.retry_after is not None:
        properties[RETRY_AFTER] = str(status.retry_after)
    return _Reply(encode_json(operation_body(status)), properties)


def _data_section(body: Any) -> bytes | str | None:
    """The register message's body: Node and C send a data section (bytes); C# a string."""
    if body is None or isinstance(body, bytes | str):
        return body
    raise DpsError(INVALID_BODY, "The message body must be a DeviceRegistration JSON object.")


class AmqpProtocol(asyncio.Protocol):
    """AMQP over the TLS front door: the inner protocol `start_tls_server` runs."""

    def __init__(self, engine: DeviceEngine, spawn: Spawn, limits: AmqpLimits) -> None:
        self._engine = engine
        self._spawn = spawn
        self._limits = limits
        self._connection: AmqpConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        chain = tuple(stream.get_extra_info(EXTRA_PEER_CHAIN) or ())
        self._connection = AmqpConnection(
            self._engine, stream, peer_chain=chain, spawn=self._spawn, limits=self._limits
        )

    def data_received(self, data: bytes) -> None:
        if self._connection is not None:
            self._connection.data_received(data)

    def eof_received(self) -> bool:
        return False  # the peer is gone: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is not None:
            self._connection.connection_lost()


def amqp_protocol_factory(
    engine: DeviceEngine, *, spawn: Spawn, limits: AmqpLimits | None = None
) -> Callable[[], asyncio.Protocol]:
    """The `inner_factory` of `start_tls_server` for the AMQP port."""
    chosen = limits or DEFAULT_AMQP_LIMITS
    return lambda: AmqpProtocol(engine, spawn, chosen)
