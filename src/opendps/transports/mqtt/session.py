"""The server side of one MQTT 3.1.1 connection, sans-I/O (STYLE §3.4 habit 1).

Three verbs, as h11's `Connection` and mqttproto's broker state machine:
- `receive_data(data, now)` → the events the bytes completed;
- `accept()` / `refuse(code)` / `publish(topic, payload)` → queue packets;
- `data_to_send()` → the bytes to write.
Time is injected (`now`, monotonic seconds) so the driver owns the clock: it calls
`check_deadline(now)` when `deadline` passes.

States: AWAITING_CONNECT → (CONNECT received) CONNECTING → (accept) CONNECTED → CLOSED.
`refuse`, a DISCONNECT, a protocol violation or a missed deadline all end in CLOSED, after
which the driver flushes `data_to_send()` and closes the transport.

What the session answers by itself (no decision above it is needed): PUBACK for QoS 1
publishes, SUBACK (granting min(requested, 1) to the filters in `allowed_filters`, failure
0x80 to the others: DPS accepts only `$dps/registrations/res/#`, protocol.md §3), UNSUBACK
(Node waits for it before `register()` settles, clients.md §3), PINGRESP. CONNACK always says
session-present 0: DPS keeps no sessions, whatever clean-session says (protocol.md §3).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from opendps.transports.mqtt.packets import (
    SUBSCRIPTION_FAILURE,
    Connack,
    ConnackCode,
    Connect,
    Disconnect,
    MqttProtocolError,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    decode_packet,
    encode_packet,
)

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "KEEP_ALIVE_GRACE_FACTOR",
    "MAX_INFLIGHT_PUBLISHES",
    "MAX_PACKET_BYTES",
    "ConnectReceived",
    "ConnectionClosed",
    "DisconnectReceived",
    "Event",
    "PublishAcknowledged",
    "PublishReceived",
    "ServerSession",
    "SessionState",
    "Subscribed",
    "Unsubscribed",
]

# Azure DPS's message size limit is 96 KB (protocol.md §9). A DPS publish is its topic (well
# under 1 KiB: a `$rid` and an operation id) plus a DeviceRegistration payload bounded by that
# limit, so 97 KiB admits every valid request; anything longer is refused as soon as its fixed
# header announces it, before the body is buffered (MQTT has no per-packet error: the
# connection closes, as IoT Hub does for oversize messages).
MAX_PACKET_BYTES = 97 * 1024
# A device opens TLS and sends CONNECT at once (paho and mqtt.js write it on connect); a
# connection that has said nothing after this long is a probe or a slowloris. Same bound as
# the TLS handshake timeout (tls/server.py) for the same reason.
CONNECT_TIMEOUT_SECONDS = 10.0
# MQTT 3.1.1 §3.1.2.10: the server disconnects a client silent for one and a half keep-alive
# periods.
KEEP_ALIVE_GRACE_FACTOR = 1.5
# QoS 1 answers not yet acknowledged by the device. A DPS device has one request in flight
# (clients.md §2, §3); 64 leaves room for a buggy one without letting it grow memory unbounded.
MAX_INFLIGHT_PUBLISHES = 64


class SessionState(enum.Enum):
    AWAITING_CONNECT = "awaiting_connect"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ConnectReceived:
    """A valid CONNECT: the driver decides, then calls `accept()` or `refuse(code)`."""

    connect: Connect


@dataclass(frozen=True, slots=True)
class PublishReceived:
    """A device publish (already acknowledged if QoS 1)."""

    topic: str
    payload: bytes
    qos: int


@dataclass(frozen=True, slots=True)
class Subscribed:
    topic_filters: tuple[str, ...]
    return_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    topic_filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PublishAcknowledged:
    packet_id: int


@dataclass(frozen=True, slots=True)
class DisconnectReceived:
    """The client said DISCONNECT: a clean end."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The session ended for `reason` (protocol violation, timeout, refusal); any CONNACK
    refusal is already queued in `data_to_send()`."""

    reason: str


Event: TypeAlias = (
    ConnectReceived
    | PublishReceived
    | Subscribed
    | Unsubscribed
    | PublishAcknowledged
    | DisconnectReceived
    | ConnectionClosed
)


class ServerSession:
    """One connection's MQTT state. Never raises on peer input: violations become a
    `ConnectionClosed` event (and a CONNACK refusal where §3.2.2.3 has a code)."""

    def __init__(
        self,
        now: float,
        *,
        allowed_filters: frozenset[str],
        max_packet_bytes: int = MAX_PACKET_BYTES,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self.state = SessionState.AWAITING_CONNECT
        self.keep_alive = 0
        self._allowed = allowed_filters
        self._max_packet = max_packet_bytes
        self._buffer = bytearray()
        self._outbound = bytearray()
        self._subscriptions: set[str] = set()
        self._inflight: set[int] = set()
        self._next_id = 1
        self._deadline: float | None = now + connect_timeout

    # -- the three verbs ------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the peer; return the events they complete (possibly none)."""
        if self.state is SessionState.CLOSED:
            return []
        self._buffer += data
        if data and self.state is SessionState.CONNECTED:
            self._touch(now)
        return self._process()

    def data_to_send(self) -> bytes:
        out = bytes(self._outbound)
        self._outbound.clear()
        return out

    @property
    def deadline(self) -> float | None:
        """When `check_deadline` must next be called (monotonic seconds); None: never."""
        return None if self.state is SessionState.CLOSED else self._deadline

    def check_deadline(self, now: float) -> list[Event]:
        """Close the session if its connect or keep-alive deadline has passed."""
        if self._deadline is None or now < self._deadline or self.state is SessionState.CLOSED:
            return []
        if self.state is SessionState.AWAITING_CONNECT:
            return [self._close("no CONNECT in time")]
        return [self._close("keep-alive expired")]

    # -- decisions of the driver ------------------------------------------------------------------

    def accept(self, now: float) -> list[Event]:
        """CONNACK 0; returns events of packets that arrived behind the CONNECT."""
        self._require(SessionState.CONNECTING, "accept")
        self._send(Connack(ConnackCode.ACCEPTED, session_present=False))
        self.state = SessionState.CONNECTED
        self._touch(now)
        return self._process()

    def refuse(self, code: ConnackCode, reason: str) -> list[Event]:
        """CONNACK with a refusal code, then close (§3.2.2.3)."""
        self._require(SessionState.CONNECTING, "refuse")
        if code is ConnackCode.ACCEPTED:
            raise ValueError("refuse() needs a refusal code")
        self._send(Connack(code))
        return [self._close(reason)]

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> bool:
        """Queue a publish to the client. Delivered only to a matching subscription (MQTT
        semantics); False when dropped (not subscribed, or too many unacknowledged)."""
        self._require(SessionState.CONNECTED, "publish")
        if not any(_matches(f, topic) for f in self._subscriptions):
            return False
        if qos == 0:
            self._send(Publish(topic, payload))
            return True
        if len(self._inflight) >= MAX_INFLIGHT_PUBLISHES:
            return False
        packet_id = self._allocate_id()
        self._inflight.add(packet_id)
        self._send(Publish(topic, payload, qos=1, packet_id=packet_id))
        return True

    def close(self, reason: str) -> list[Event]:
        """End the session from our side (shutdown)."""
        if self.state is SessionState.CLOSED:
            return []
        return [self._close(reason)]

    @property
    def subscriptions(self) -> frozenset[str]:
        return frozenset(self._subscriptions)

    @property
    def unacknowledged(self) -> int:
        return len(self._inflight)

    # -- internals ----------------------------------------------------------------------------

    def _require(self, state: SessionState, action: str) -> None:
        # Misuse by the driver (a bug of ours), like h11's LocalProtocolError.
        if self.state is not state:
            raise RuntimeError(f"{action}() in state {self.state.value}, needs {state.value}")

    def _process(self) -> list[Event]:
        events: list[Event] = []
        while self.state in (SessionState.AWAITING_CONNECT, SessionState.CONNECTED):
            try:
                decoded = decode_packet(self._buffer, max_packet_size=self._max_packet)
                if decoded is None:
                    break
                packet, used = decoded
                del self._buffer[:used]
                event = self._handle(packet)
            except MqttProtocolError as error:
                events.append(self._violation(error))
                break
            if event is not None:
                events.append(event)
        return events

    def _handle(self, packet: Packet) -> Event | None:
        if self.state is SessionState.AWAITING_CONNECT:
            if not isinstance(packet, Connect):
                raise MqttProtocolError(f"{type(packet).__name__} before CONNECT")  # §3.1
            return self._on_connect(packet)
        handler = _CONNECTED_HANDLERS.get(type(packet))
        if handler is None:
            raise MqttProtocolError(f"{type(packet).__name__} from a client")
        return handler(self, packet)

    def _on_connect(self, packet: Connect) -> Event:
        if not packet.client_id and not packet.clean_session:
            # §3.1.3.1: a zero-byte client id needs clean session 1.
            raise MqttProtocolError(
                "empty client id without clean session",
                connack_code=ConnackCode.IDENTIFIER_REJECTED,
            )
        self.state = SessionState.CONNECTING
        self.keep_alive = packet.keep_alive
        self._deadline = None  # our own decision is pending; accept() starts the keep-alive
        return ConnectReceived(packet)

    def _on_publish(self, packet: Packet) -> Event:
        assert isinstance(packet, Publish)
        if packet.qos == 2:
            raise MqttProtocolError("QoS 2 publish (DPS supports QoS 0 and 1)")
        if packet.packet_id is not None:
            self._send(Puback(packet.packet_id))
        return PublishReceived(packet.topic, packet.payload, packet.qos)

    def _on_puback(self, packet: Packet) -> Event:
        assert isinstance(packet, Puback)
        if packet.packet_id not in self._inflight:
            raise MqttProtocolError(f"PUBACK for unknown packet id {packet.packet_id}")
        self._inflight.discard(packet.packet_id)
        return PublishAcknowledged(packet.packet_id)

    def _on_subscribe(self, packet: Packet) -> Event:
        assert isinstance(packet, Subscribe)
        codes: list[int] = []
        for topic_filter, qos in packet.subscriptions:
            if topic_filter in self._allowed:
                self._subscriptions.add(topic_filter)
                codes.append(min(qos, 1))
            else:
                codes.append(SUBSCRIPTION_FAILURE)
        self._send(Suback(packet.packet_id, tuple(codes)))
        return Subscribed(tuple(f for f, _ in packet.subscriptions), tuple(codes))

    def _on_unsubscribe(self, packet: Packet) -> Event:
        assert isinstance(packet, Unsubscribe)
        self._subscriptions.difference_update(packet.topic_filters)
        self._send(Unsuback(packet.packet_id))
        return Unsubscribed(packet.topic_filters)

    def _on_pingreq(self, packet: Packet) -> None:
        self._send(Pingresp())

    def _on_disconnect(self, packet: Packet) -> Event:
        self.state = SessionState.CLOSED
        self._buffer.clear()
        return DisconnectReceived()

    def _violation(self, error: MqttProtocolError) -> Event:
        if error.connack_code is not None and self.state is SessionState.AWAITING_CONNECT:
            self._send(Connack(error.connack_code))
        return self._close(f"protocol error: {error.message}")

    def _close(self, reason: str) -> ConnectionClosed:
        self.state = SessionState.CLOSED
        self._buffer.clear()
        return ConnectionClosed(reason)

    def _send(self, packet: Packet) -> None:
        self._outbound += encode_packet(packet)

    def _touch(self, now: float) -> None:
        # keep_alive 0 turns the mechanism off (§3.1.2.10).
        self._deadline = (
            now + KEEP_ALIVE_GRACE_FACTOR * self.keep_alive if self.keep_alive else None
        )

    def _allocate_id(self) -> int:
        while True:
            packet_id = self._next_id
            self._next_id = packet_id % 0xFFFF + 1
            if packet_id not in self._inflight:
                return packet_id


_CONNECTED_HANDLERS = {
    Publish: ServerSession._on_publish,
    Puback: ServerSession._on_puback,
    Subscribe: ServerSession._on_subscribe,
    Unsubscribe: ServerSession._on_unsubscribe,
    Pingreq: ServerSession._on_pingreq,
    Disconnect: ServerSession._on_disconnect,
}


def _matches(topic_filter: str, topic: str) -> bool:
    """§4.7: does `topic` match `topic_filter` (with `+` and `#` wildcards)?"""
    filter_levels, topic_levels = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels) or (level != "+" and level != topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)
