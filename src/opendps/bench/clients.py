"""Lightweight load-generator clients: one registration (or yardstick cycle) per TLS connection.

Each function opens a fresh TLS connection, as a real device does on every registration (no
session resumption: a new `ssl` connection without a saved session always makes a full
handshake), runs one exchange and closes. They are deliberately leaner than the simulator's
(simulator/): no retries on 429, no per-request timeouts beyond one overall deadline, so the
load generator spends as little CPU per registration as it can. Every failure raises
`BenchClientError` with a short reason (never a key or token).

MQTT flows follow protocol.md §3 in SDK order, waiting for each answer before the next packet:
CONNECT → CONNACK, SUBSCRIBE `$dps/registrations/res/#` → SUBACK, PUBLISH register (QoS 1) →
PUBACK + `$dps/registrations/res/200/?$rid=…`, DISCONNECT. The yardstick cycle against Mosquitto
is the same sequence with a plain topic, so both sides do the same TLS and MQTT work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

from opendps.model.errors import DpsError
from opendps.simulator import amqp as simulator_amqp
from opendps.simulator.api import DeviceParams
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

# The api-versions the Azure SDKs send (protocol.md §0, §1).
MQTT_API_VERSION = "2019-03-31"
HTTPS_API_VERSION = "2021-06-01"
# The device WebSocket path on the HTTPS port (protocol.md §3).
WEBSOCKET_PATH = "/$iothub/websocket"
# A registration that takes longer than this is counted as an error, not waited for: it is far
# beyond any latency worth measuring and keeps a stuck server from hanging the bench.
DEADLINE_SECONDS = 30.0
# The longest wait after `assigning` before polling (the SDKs wait 1-3 s, which would dominate
# the latency; asking sooner only costs the server more, so it never flatters the figures).
DEFAULT_POLL_SECONDS = 0.1
READ_CHUNK_BYTES = 65536
# The only key-exchange group offered: ECDHE over P-256, matching the dev server certificate's
# curve (ARCHITECTURE §5), on both our server and Mosquitto, so the yardstick does the same work.
ECDH_CURVE = "prime256v1"
# TLS 1.2 suites: ECDHE key exchange only (ARCHITECTURE §6), AES-GCM as the SDKs negotiate.
TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class BenchClientError(Exception):
    """One registration or cycle failed; the message says how."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a client connects: address to dial and name to verify in the certificate."""

    host: str
    port: int
    server_name: str


def client_context(ca_file: str, tls_version: str) -> ssl.SSLContext:
    """A client context pinned to one TLS version and ECDHE P-256, trusting `ca_file`."""
    context = ssl.create_default_context(cafile=ca_file)
    version = TLS_VERSIONS[tls_version]
    context.minimum_version = context.maximum_version = version
    context.set_ecdh_curve(ECDH_CURVE)
    if version is ssl.TLSVersion.TLSv1_2:
        context.set_ciphers(TLS12_CIPHERS)
    return context


class _Channel(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes: ...  # b"" at the end of the stream


class _StreamChannel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self) -> bytes:
        return await self._reader.read(READ_CHUNK_BYTES)


class _WebSocketChannel:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def receive(self) -> bytes:
        message = await self._ws.receive()
        return bytes(message.data) if message.type is aiohttp.WSMsgType.BINARY else b""


@contextlib.asynccontextmanager
async def _tls_channel(target: Target, context: ssl.SSLContext) -> AsyncIterator[_Channel]:
    reader, writer = await asyncio.open_connection(
        target.host, target.port, ssl=context, server_hostname=target.server_name
    )
    try:
        yield _StreamChannel(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def _websocket_channel(target: Target, context: ssl.SSLContext) -> AsyncIterator[_Channel]:
    url = f"wss://{target.host}:{target.port}{WEBSOCKET_PATH}"
    headers = {"Host": f"{target.server_name}:{target.port}"}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            url,
            protocols=("mqtt",),
            ssl=context,
            server_hostname=target.server_name,
            headers=headers,
        ) as ws:
            yield _WebSocketChannel(ws)


class _MqttPeer:
    """Packets over a channel, decoded with the project's own MQTT codec."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel
        self._buffer = bytearray()

    async def send(self, packet: Packet) -> None:
        await self._channel.send(encode_packet(packet))

    async def receive(self) -> Packet:
        while (decoded := decode_packet(self._buffer)) is None:
            data = await self._channel.receive()
            if not data:
                raise BenchClientError("the server closed the connection")
            self._buffer += data
        packet, used = decoded
        del self._buffer[:used]
        return packet

    async def connect(
        self, client_id: str, username: str | None, password: bytes | None, keep_alive: int = 60
    ) -> None:
        await self.send(Connect(client_id, keep_alive, True, username, password))
        connack = await self.receive()
        if not isinstance(connack, Connack) or connack.return_code is not ConnackCode.ACCEPTED:
            raise BenchClientError(f"CONNECT refused: {connack}")

    async def subscribe(self, topic_filter: str) -> None:
        await self.send(Subscribe(1, ((topic_filter, 1),)))
        suback = await self.receive()
        if not isinstance(suback, Suback) or suback.return_codes[0] > 1:
            raise BenchClientError(f"SUBSCRIBE refused: {suback}")

    async def next_publish(self) -> Publish:
        """The next PUBLISH (acknowledged when QoS 1); PUBACKs of our own publishes are skipped."""
        while True:
            packet = await self.receive()
            if isinstance(packet, Publish):
                if packet.packet_id is not None:
                    await self.send(Puback(packet.packet_id))
                return packet


@dataclass(frozen=True, slots=True)
class Device:
    """A device to register: its ID, and its SAS token already signed (None for an X.509
    device, whose certificate is in the TLS context)."""

    id_scope: str
    registration_id: str
    sas_token: str | None


async def register_mqtt(
    target: Target, context: ssl.SSLContext, device: Device, *, websocket: bool = False
) -> None:
    """One MQTT registration on a new connection; raises BenchClientError unless `assigned`."""
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            opened = (
                _websocket_channel(target, context) if websocket else _tls_channel(target, context)
            )
            async with opened as channel:
                await _register_over(_MqttPeer(channel), device)
    except TimeoutError:
        raise BenchClientError("no answer within the deadline") from None
    except (OSError, ssl.SSLError, aiohttp.ClientError, MqttProtocolError, DpsError) as err:
        raise BenchClientError(f"{type(err).__name__}: {err}") from None


async def _register_over(peer: _MqttPeer, device: Device) -> None:
    username = (
        f"{device.id_scope}/registrations/{device.registration_id}/api-version={MQTT_API_VERSION}"
    )
    password = device.sas_token.encode() if device.sas_token is not None else None
    await peer.connect(device.registration_id, username, password)
    await peer.subscribe(RESPONSE_FILTER)
    body = json.dumps({"registrationId": device.registration_id}).encode()
    topic = f"{REGISTER_TOPIC_PREFIX}?$rid=1"
    for request_number in range(2, 1000):
        await peer.send(Publish(topic, body, qos=1, packet_id=request_number - 1))
        response = await peer.next_publish()
        answer = parse_response_topic(response.topic)
        result = _json_object(response.payload)
        if answer.status == 200:
            _check_assigned(result)
            break
        if answer.status != 202:
            raise BenchClientError(f"answer {answer.status}: {_error_text(result)}")
        await asyncio.sleep(_poll_wait(answer.retry_after))
        operation = result.get("operationId")
        topic = f"{STATUS_TOPIC_PREFIX}?$rid={request_number}&operationId={operation}"
        body = b" "
    await peer.send(Disconnect())


async def hold_mqtt_connection(
    target: Target,
    context: ssl.SSLContext,
    device: Device,
    *,
    on_connected: Callable[[], None],
    release: asyncio.Event,
) -> None:
    """Open a connection, CONNECT as the device and stay idle until `release` (for the memory
    figure of many idle devices). Keep-alive 0 (MQTT 3.1.1 §3.1.2.10): the server must not
    drop a silent connection, whatever the run's length."""
    username = (
        f"{device.id_scope}/registrations/{device.registration_id}/api-version={MQTT_API_VERSION}"
    )
    try:
        async with asyncio.timeout(DEADLINE_SECONDS) as deadline:
            async with _tls_channel(target, context) as channel:
                peer = _MqttPeer(channel)
                password = device.sas_token.encode() if device.sas_token is not None else None
                await peer.connect(device.registration_id, username, password, 0)
                deadline.reschedule(None)  # connected: now idle for as long as the run needs
                on_connected()
                await release.wait()
                await peer.send(Disconnect())
    except TimeoutError:
        raise BenchClientError("no answer within the deadline") from None
    except (OSError, ssl.SSLError, MqttProtocolError) as err:
        raise BenchClientError(f"{type(err).__name__}: {err}") from None


async def register_amqp(target: Target, ca_file: str, device: Device) -> None:
    """One AMQP registration on a new TLS connection, with the simulator's proton client (an
    AMQP client is far more than the few MQTT packets above; the simulator's is the one we have).
    It uses the default client TLS settings, not --tls-version."""
    params = DeviceParams(
        host=target.host,
        port=target.port,
        id_scope=device.id_scope,
        registration_id=device.registration_id,
        sas_token=device.sas_token,
        certificate=None,
        key=None,
        payload=None,
        ca_file=Path(ca_file),
    )
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            outcome = await simulator_amqp.register_amqp(params, websocket=False)
    except TimeoutError:
        raise BenchClientError("no answer within the deadline") from None
    if not outcome.assigned:
        raise BenchClientError(f"not assigned: {json.dumps(outcome.body)[:200]}")


async def register_https(
    target: Target, context: ssl.SSLContext, device: Device, *, api_version: str = HTTPS_API_VERSION
) -> None:
    """One HTTPS registration (PUT register, then polls) on a new connection."""
    base = (
        f"https://{target.host}:{target.port}/{device.id_scope}"
        f"/registrations/{device.registration_id}"
    )
    headers = {"Host": f"{target.server_name}:{target.port}", "Accept": "application/json"}
    if device.sas_token is not None:
        headers["Authorization"] = device.sas_token
    query = {"api-version": api_version}
    # One connection per session, closed with it: every registration pays a full handshake.
    connector = aiohttp.TCPConnector(ssl=context, force_close=True, limit=1)
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            async with aiohttp.ClientSession(connector=connector) as session:
                body = {"registrationId": device.registration_id}
                async with session.put(
                    base + "/register",
                    params=query,
                    json=body,
                    headers=headers,
                    server_hostname=target.server_name,
                ) as response:
                    status, result, wait = (
                        response.status,
                        await _read_json(response),
                        _header_wait(response),
                    )
                while status == 202:
                    await asyncio.sleep(wait)
                    async with session.get(
                        f"{base}/operations/{result.get('operationId')}",
                        params=query,
                        headers=headers,
                        server_hostname=target.server_name,
                    ) as response:
                        status, result, wait = (
                            response.status,
                            await _read_json(response),
                            _header_wait(response),
                        )
    except TimeoutError:
        raise BenchClientError("no answer within the deadline") from None
    except (OSError, ssl.SSLError, aiohttp.ClientError) as err:
        raise BenchClientError(f"{type(err).__name__}: {err}") from None
    if status != 200:
        raise BenchClientError(f"answer {status}: {_error_text(result)}")
    _check_assigned(result)


async def yardstick_cycle(target: Target, context: ssl.SSLContext, client_id: str) -> None:
    """The reference cycle against an MQTT broker: connect, subscribe, publish to the subscribed
    topic at QoS 1, receive it, disconnect: the same packets as an MQTT registration."""
    topic = f"bench/{client_id}"
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            async with _tls_channel(target, context) as channel:
                peer = _MqttPeer(channel)
                await peer.connect(client_id, None, None)
                await peer.subscribe(topic)
                await peer.send(Publish(topic, b'{"registrationId":"x"}', qos=1, packet_id=2))
                received = await peer.next_publish()
                if received.topic != topic:
                    raise BenchClientError(f"unexpected message on {received.topic}")
                await peer.send(Disconnect())
    except TimeoutError:
        raise BenchClientError("no answer within the deadline") from None
    except (OSError, ssl.SSLError, MqttProtocolError) as err:
        raise BenchClientError(f"{type(err).__name__}: {err}") from None


def _check_assigned(result: dict[str, object]) -> None:
    status = result.get("status")
    if status != "assigned":
        raise BenchClientError(f"status {status!r}: {_error_text(result)}")


def _error_text(result: dict[str, object]) -> str:
    state = result.get("registrationState")
    if isinstance(state, dict) and state.get("errorMessage"):
        return str(state["errorMessage"])[:200]
    return str(result.get("message") or result.get("errorCode") or "no message")[:200]


def _poll_wait(retry_after: int | None) -> float:
    # The server's retry-after is sized for real devices (seconds); the bench measures the
    # server, not that courtesy, so it polls after at most DEFAULT_POLL_SECONDS.
    return (
        DEFAULT_POLL_SECONDS
        if retry_after is None
        else min(float(retry_after), DEFAULT_POLL_SECONDS)
    )


def _header_wait(response: aiohttp.ClientResponse) -> float:
    value = response.headers.get("retry-after")
    try:
        return _poll_wait(int(value) if value is not None else None)
    except ValueError:
        return DEFAULT_POLL_SECONDS


async def _read_json(response: aiohttp.ClientResponse) -> dict[str, object]:
    return _json_object(await response.read())


def _json_object(payload: bytes) -> dict[str, object]:
    try:
        body = json.loads(payload)
    except ValueError:
        return {"message": payload[:200].decode("utf-8", "replace")}
    return body if isinstance(body, dict) else {"message": str(body)[:200]}


__all__ = [
    "BenchClientError",
    "Device",
    "Target",
    "client_context",
    "hold_mqtt_connection",
    "register_https",
    "register_mqtt",
    "yardstick_cycle",
]
