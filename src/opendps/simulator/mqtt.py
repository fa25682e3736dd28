"""A thin DPS device client over MQTT 3.1.1 (protocol.md §3), on our own codec.

The client side of transports/mqtt: `packets.py` encodes what a device sends and decodes what
the server answers, `topics.py` builds the user name and request topics and reads response
topics. The flow is the SDKs' (clients.md §2, §3b): CONNECT (client id = registration ID, user
name `{scope}/registrations/{id}/api-version=…`, password = SAS token or none for X.509),
SUBSCRIBE `$dps/registrations/res/#`, PUBLISH register at QoS 1, poll with
`iotdps-get-operationstatus` after each `assigning` answer's `retry-after`, DISCONNECT.

Over TLS (port 8883 by default) or inside a WebSocket at `wss://host:port/$iothub/websocket`
with subprotocol `mqtt` (443).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from typing import Any
from urllib.parse import quote

import aiohttp

from opendps import __version__
from opendps.model.errors import DpsError
from opendps.model.json import JsonObject
from opendps.simulator.api import DeviceParams, RegistrationOutcome
from opendps.simulator.channels import (
    Channel,
    client_ssl_context,
    failure,
    open_tls_channel,
    open_websocket_channel,
)
from opendps.transports.mqtt.packets import (
    Connack,
    ConnackCode,
    Connect,
    Disconnect,
    MqttProtocolError,
    Packet,
    Puback,
    Publish,
    Suback,
    Subscribe,
    decode_packet,
    encode_packet,
)
from opendps.transports.mqtt.topics import (
    REGISTER_TOPIC_PREFIX,
    RESPONSE_FILTER,
    STATUS_TOPIC_PREFIX,
    parse_response_topic,
)

__all__ = ["register_mqtt"]

# The api-version Python and Node put in the MQTT user name (protocol.md §0).
DEVICE_API_VERSION = "2019-03-31"
# Node's keep-alive (clients.md §3b); a registration takes seconds, so it never fires.
KEEP_ALIVE_SECONDS = 180
# What Python waits after an `assigning` answer without `retry-after` (clients.md §2).
DEFAULT_RETRY_AFTER_SECONDS = 2.0
# A server asking for longer is honoured up to this (as simulator/https.py).
MAX_RETRY_AFTER_SECONDS = 30.0
# Each request gets 30 s, like every SDK (clients.md §2, §3).
REQUEST_TIMEOUT_SECONDS = 30.0
# The whole registration: longer than the engine's assigning deadline (120 s).
REGISTRATION_DEADLINE_SECONDS = 150.0


async def register_mqtt(params: DeviceParams, *, websocket: bool) -> RegistrationOutcome:
    """Register the device over MQTT (TLS, or WebSocket when `websocket`) and poll until the
    registration ends. Never raises for network or protocol trouble: an outcome without a
    status code and a `message` says what went wrong (no key or token is ever in it)."""
    try:
        context = client_ssl_context(params)
    except (OSError, ssl.SSLError, ValueError) as err:
        return failure(f"cannot load the TLS files: {err}")
    try:
        async with asyncio.timeout(REGISTRATION_DEADLINE_SECONDS):
            opened = (
                open_websocket_channel(params, context, "mqtt")
                if websocket
                else open_tls_channel(params, context)
            )
            async with opened as channel:
                return await _Device(channel, params).register()
    except TimeoutError:
        return failure("the registration did not end in time")
    except (ssl.SSLError, aiohttp.ClientError, OSError) as err:
        return failure(f"cannot reach {params.host}:{params.port}: {err}")
    except (MqttProtocolError, DpsError) as err:
        return failure(f"the server broke the MQTT protocol: {err}")


class _Device:
    """One registration over an open channel: packets in and out, in SDK order."""

    def __init__(self, channel: Channel, params: DeviceParams) -> None:
        self._channel = channel
        self._params = params
        self._buffer = bytearray()
        self._next_id = 0

    async def register(self) -> RegistrationOutcome:
        refused = await self._connect()
        if refused is not None:
            return refused
        await self._send(Subscribe(self._packet_id(), ((RESPONSE_FILTER, 1),)))
        suback = await self._expect(Suback)
        if suback.return_codes[0] > 1:
            return failure(f"the server refused the subscription to {RESPONSE_FILTER}")
        body: JsonObject = {"registrationId": self._params.registration_id}
        if self._params.payload is not None:
            body["payload"] = self._params.payload
        outcome = await self._request(REGISTER_TOPIC_PREFIX, json.dumps(body).encode())
        while outcome[0] < 400 and outcome[1].get("status") == "assigning":
            operation_id = outcome[1].get("operationId")
            if not isinstance(operation_id, str) or not operation_id:
                break
            await asyncio.sleep(outcome[2])
            query = f"&operationId={quote(operation_id, safe='')}"
            outcome = await self._request(STATUS_TOPIC_PREFIX, b" ", query)
        await self._send(Disconnect())
        return RegistrationOutcome(outcome[0], outcome[1])

    async def _connect(self) -> RegistrationOutcome | None:
        params = self._params
        client = quote(f"opendps-simulator/{__version__}", safe="")
        username = (
            f"{params.id_scope}/registrations/{params.registration_id}"
            f"/api-version={DEVICE_API_VERSION}&ClientVersion={client}"
        )
        password = params.sas_token.encode() if params.sas_token is not None else None
        await self._send(
            Connect(params.registration_id, KEEP_ALIVE_SECONDS, True, username, password)
        )
        connack = await self._expect(Connack)
        if connack.return_code is ConnackCode.ACCEPTED:
            return None
        code = connack.return_code
        return failure(f"the server refused the connection: CONNACK {code.value} ({code.name})")

    async def _request(
        self, prefix: str, payload: bytes, query: str = ""
    ) -> tuple[int, JsonObject, float]:
        """Publish one request; return the answer's status, body and the wait it asks for.
        Answers ≥ 429 are retried after `retry-after`, as the Python SDK does."""
        while True:
            rid = str(uuid.uuid4())
            topic = f"{prefix}?$rid={rid}{query}"
            await self._send(Publish(topic, payload, qos=1, packet_id=self._packet_id()))
            status, body, wait = await self._answer(rid)
            if status < 429:
                return status, body, wait
            await asyncio.sleep(wait)

    async def _answer(self, rid: str) -> tuple[int, JsonObject, float]:
        async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
            while True:
                packet = await self._packet()
                if not isinstance(packet, Publish):
                    continue  # the PUBACK of our request
                if packet.packet_id is not None:
                    await self._send(Puback(packet.packet_id))
                response = parse_response_topic(packet.topic)
                if response.rid == rid:
                    return response.status, _json_object(packet.payload), _wait(response)

    async def _expect(self, kind: type[Any]) -> Any:
        async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
            packet = await self._packet()
        if not isinstance(packet, kind):
            raise MqttProtocolError(f"expected {kind.__name__}, got {type(packet).__name__}")
        return packet

    async def _packet(self) -> Packet:
        while (decoded := decode_packet(self._buffer)) is None:
            data = await self._channel.receive()
            if not data:
                raise ConnectionResetError("the server closed the connection")
            self._buffer += data
        packet, used = decoded
        del self._buffer[:used]
        return packet

    async def _send(self, packet: Packet) -> None:
        await self._channel.send(encode_packet(packet))

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 0xFFFF + 1
        return self._next_id


def _wait(response: Any) -> float:
    seconds = response.retry_after
    wait = float(seconds) if seconds is not None else DEFAULT_RETRY_AFTER_SECONDS
    return min(wait, MAX_RETRY_AFTER_SECONDS)


def _json_object(payload: bytes) -> JsonObject:
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return {"message": payload.decode("utf-8", "replace")[:500]}
    return body
