"""A thin DPS device client over AMQP 1.0 (protocol.md §4), on proton's engine.

The flow is the Node SDK's (clients.md §3d): SASL PLAIN with user name
`{scope}/registrations/{id}` and the SAS token as password (no SASL at all for X.509: the TLS
client chain is the credential), OPEN, one session, a receiver and a sender link on
`{scope}/registrations/{id}`, a register message (data section with the `DeviceRegistration`
JSON, `iotdps-operation-type = iotdps-register`, a uuid string `correlation-id`), then
`iotdps-get-operationstatus` polls after each `assigning` answer's `retry-after`; finally DETACH,
END and CLOSE. As on the server, proton's engine is pumped over our own TLS stream (port 5671)
or a WebSocket at `wss://host:port/$iothub/websocket` with subprotocol `AMQPWSB10` (443).
A TPM device authenticates with DPS's own `TPM` SASL mechanism instead of PLAIN (§4.4): we
speak that SASL layer ourselves (simulator/tpm_sasl.py) and give proton the stream after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from proton import (
    Collector,
    Condition,
    Connection,
    Delivery,
    Endpoint,
    Event,
    Message,
    Receiver,
    Sender,
    Transport,
    symbol,
)

from opendps.model.json import JsonObject
from opendps.simulator.api import DeviceParams, RegistrationOutcome, TpmSettings
from opendps.simulator.channels import (
    Channel,
    client_ssl_context,
    failure,
    open_tls_channel,
    open_websocket_channel,
)
from opendps.simulator.tpm import (
    AsyncTpm,
    install_hub_key,
    open_tpm,
    tpm_attestation_body,
    tpm_sas_token,
)
from opendps.simulator.tpm_device import TpmError
from opendps.simulator.tpm_sasl import KeyReceived, SaslDone, SaslRefused, TpmSaslClient

__all__ = ["register_amqp"]

# What Node waits after an `assigning` answer without `retry-after` (clients.md §3).
DEFAULT_RETRY_AFTER_SECONDS = 2.0
# A server asking for longer is honoured up to this (as simulator/https.py).
MAX_RETRY_AFTER_SECONDS = 30.0
# Each request gets 30 s, like every SDK (clients.md §3).
REQUEST_TIMEOUT_SECONDS = 30.0
# The whole registration: longer than the engine's assigning deadline (120 s).
REGISTRATION_DEADLINE_SECONDS = 150.0
# After the answer, DETACH/END/CLOSE get this long to be answered before the socket is dropped.
CLOSE_TIMEOUT_SECONDS = 5.0
WEBSOCKET_SUBPROTOCOL = "AMQPWSB10"
API_VERSION = "2019-03-31"


class _Closed(Exception):
    """The server closed the connection; `condition` is its CLOSE error, if any."""

    def __init__(self, condition: Condition | None) -> None:
        super().__init__(condition.description if condition else "connection closed")
        self.condition = condition


class _SaslRefused(Exception):
    """The TPM SASL exchange did not succeed (the message says why)."""


async def register_amqp(params: DeviceParams, *, websocket: bool) -> RegistrationOutcome:
    """Register the device over AMQP (TLS, or WebSocket when `websocket`) and poll until the
    registration ends. Never raises for network or protocol trouble: an outcome without a
    status code and a `message` says what went wrong (no key or token is ever in it)."""
    try:
        context = client_ssl_context(params)
    except (OSError, ssl.SSLError, ValueError) as err:
        return failure(f"cannot load the TLS files: {err}")
    try:
        async with asyncio.timeout(REGISTRATION_DEADLINE_SECONDS):
            opened = (
                open_websocket_channel(params, context, WEBSOCKET_SUBPROTOCOL)
                if websocket
                else open_tls_channel(params, context)
            )
            async with opened as channel:
                if params.tpm is not None:
                    return await _register_tpm(channel, params, params.tpm)
                return await _Device(channel, params).register()
    except TimeoutError:
        return failure("the registration did not end in time")
    except _Closed as closed:
        return failure(f"the server closed the connection: {closed}")
    except _SaslRefused as refused:
        return failure(f"TPM SASL authentication failed: {refused}")
    except (ssl.SSLError, aiohttp.ClientError, OSError) as err:
        return failure(f"cannot reach {params.host}:{params.port}: {err}")
    except TpmError as err:
        return failure(str(err))


async def _register_tpm(
    channel: Channel, params: DeviceParams, settings: TpmSettings
) -> RegistrationOutcome:
    """TPM SASL (§4.4), then the usual register whose body carries the EK and SRK again."""
    async with open_tpm(settings) as tpm:
        keys = await tpm.ensure_keys()
        sasl = TpmSaslClient(
            params.id_scope, params.registration_id, keys.endorsement_key, keys.storage_root_key
        )
        received = await _tpm_sasl(channel, sasl, tpm, params)
        device = _Device(channel, params, tpm=tpm_attestation_body(keys), received=received)
        return await install_hub_key(tpm, await device.register())


async def _tpm_sasl(
    channel: Channel, sasl: TpmSaslClient, tpm: AsyncTpm, params: DeviceParams
) -> bytes:
    """Run the SASL exchange; return the bytes the server sent after its sasl-outcome."""
    while True:
        if outbound := sasl.data_to_send():
            await channel.send(outbound)
        data = await channel.receive()
        if not data:
            raise _Closed(None)
        for event in sasl.receive_data(data):
            if isinstance(event, KeyReceived):
                await tpm.activate_and_import(event.blob)
                token = await tpm_sas_token(
                    tpm, params.id_scope, params.registration_id, now=time.time()
                )
                sasl.send_token(token)
            elif isinstance(event, SaslDone):
                return event.remainder
            elif isinstance(event, SaslRefused):
                raise _SaslRefused(event.reason)


class _Device:
    """One registration: proton's client engine pumped over the channel."""

    def __init__(
        self,
        channel: Channel,
        params: DeviceParams,
        *,
        tpm: JsonObject | None = None,
        received: bytes = b"",
    ) -> None:
        """`tpm` is the register body's `tpm` member of a TPM device; `received` the bytes
        the server sent after a SASL layer spoken outside proton."""
        self._channel = channel
        self._params = params
        self._tpm = tpm
        self._address = f"{params.id_scope}/registrations/{params.registration_id}"
        self._connection = Connection()
        self._transport = Transport()
        self._collector = Collector()
        if params.sas_token is not None:
            sasl = self._transport.sasl()
            sasl.allow_insecure_mechs = True  # PLAIN inside TLS, as every SDK
            sasl.allowed_mechs("PLAIN")
            self._connection.user = self._address
            self._connection.password = params.sas_token
        self._connection.hostname = params.host
        self._connection.container = f"opendps-simulator-{uuid.uuid4()}"
        self._connection.collect(self._collector)
        self._transport.bind(self._connection)
        if received:
            self._transport.push(received)
        self._replies: dict[Any, Message] = {}
        self._outcomes: dict[str, tuple[Any, Condition | None]] = {}
        self._eof = False

    async def register(self) -> RegistrationOutcome:
        sender = self._open_links()
        await self._until(lambda: sender.credit > 0)
        body: JsonObject = {"registrationId": self._params.registration_id}
        if self._tpm is not None:
            body["tpm"] = self._tpm
        if self._params.payload is not None:
            body["payload"] = self._params.payload
        properties: dict[str, Any] = {
            "iotdps-operation-type": "iotdps-register",
            "iotdps-forceRegistration": False,
        }
        outcome = await self._request(sender, properties, json.dumps(body).encode())
        while outcome[0] is None and outcome[1].get("status") == "assigning":
            operation_id = outcome[1].get("operationId")
            if not isinstance(operation_id, str) or not operation_id:
                break
            await asyncio.sleep(outcome[2])
            poll = {
                "iotdps-operation-type": "iotdps-get-operationstatus",
                "iotdps-operation-id": operation_id,
            }
            outcome = await self._request(sender, poll, b"")
        await self._close()
        return RegistrationOutcome(outcome[0], outcome[1])

    def _open_links(self) -> Sender:
        self._connection.open()
        session = self._connection.session()
        session.open()
        properties: dict[symbol, Any] = {symbol("com.microsoft:api-version"): API_VERSION}
        receiver = session.receiver(f"receiver-{uuid.uuid4()}")
        receiver.source.address = self._address
        receiver.properties = properties
        receiver.open()
        receiver.flow(10)
        sender = session.sender(f"sender-{uuid.uuid4()}")
        sender.target.address = self._address
        sender.properties = properties
        sender.open()
        return sender

    async def _request(
        self, sender: Sender, properties: dict[str, Any], body: bytes
    ) -> tuple[int | None, JsonObject, float]:
        """Send one request; return (status code of a rejection or None, body, wait)."""
        correlation_id = str(uuid.uuid4())
        message = Message(body=body, inferred=True, properties=properties)
        message.correlation_id = correlation_id
        sender.delivery(correlation_id)
        sender.send(message.encode())
        sender.advance()
        async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
            await self._until(
                lambda: (
                    correlation_id in self._replies
                    or self._outcomes.get(correlation_id, (None, None))[1] is not None
                )
            )
        reply = self._replies.pop(correlation_id, None)
        if reply is None:
            return _rejection(self._outcomes[correlation_id][1])
        properties = reply.properties or {}
        return None, _json_object(reply.body), _wait(properties.get("retry-after"))

    async def _close(self) -> None:
        self._connection.close()
        with contextlib.suppress(TimeoutError, _Closed, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self._until(lambda: bool(self._connection.state & Endpoint.REMOTE_CLOSED))

    async def _until(self, done: Callable[[], bool]) -> None:
        while True:
            await self._flush()
            if done():
                return
            if self._eof:
                raise _Closed(self._connection.remote_condition)
            data = await self._channel.receive()
            if not data:
                self._eof = True
                self._transport.close_tail()
            elif self._transport.capacity() > 0:
                self._transport.push(data)
            self._process_events()
            if self._connection.state & Endpoint.REMOTE_CLOSED and not done():
                raise _Closed(self._connection.remote_condition)

    async def _flush(self) -> None:
        while (pending := self._transport.pending()) > 0:
            chunk = self._transport.peek(pending) or b""
            self._transport.pop(len(chunk))
            await self._channel.send(chunk)

    def _process_events(self) -> None:
        while (event := self._collector.peek()) is not None:
            self._collector.pop()
            delivery = event.delivery
            if event.type != Event.DELIVERY or delivery is None:
                continue
            link = delivery.link
            if isinstance(link, Receiver) and delivery.readable and not delivery.partial:
                message = Message()
                message.decode(link.recv(delivery.pending) or b"")
                link.advance()
                delivery.update(Delivery.ACCEPTED)
                delivery.settle()
                self._replies[message.correlation_id] = message
            elif isinstance(link, Sender) and delivery.updated:
                self._outcomes[delivery.tag] = (delivery.remote_state, delivery.remote.condition)
                delivery.settle()


def _rejection(condition: Condition | None) -> tuple[int | None, JsonObject, float]:
    """A rejected request: the DPS error JSON is the condition's description (§4.3)."""
    description = condition.description if condition is not None else None
    body = _json_object(description.encode() if description else b"")
    code = body.get("errorCode")
    status = code // 1000 if isinstance(code, int) else None
    if condition is not None:
        body.setdefault("condition", str(condition.name))
    return status, body, DEFAULT_RETRY_AFTER_SECONDS


def _wait(value: object) -> float:
    try:
        wait = float(value) if value is not None else DEFAULT_RETRY_AFTER_SECONDS  # type: ignore[arg-type]
    except ValueError:
        wait = DEFAULT_RETRY_AFTER_SECONDS
    return min(wait, MAX_RETRY_AFTER_SECONDS)


def _json_object(payload: Any) -> JsonObject:
    raw = bytes(payload) if isinstance(payload, bytes | memoryview | bytearray) else payload
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, TypeError):
        body = None
    if not isinstance(body, dict):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return {"message": text[:500]}
    return body
