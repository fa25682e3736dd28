"""MQTT 3.1.1 packets: typed records, `encode_packet` and `decode_packet` (OASIS MQTT 3.1.1).

No I/O, no clock, no state: bytes in, a packet out, or `MqttProtocolError` (STYLE §1.1/§1.2).
Both sides of the protocol use this module: the server session (session.py) decodes what
devices send and encodes its answers; the device simulator does the reverse.

Validation is strict, because a malformed packet closes the connection (MQTT 3.1.1 §4.8):
- fixed header flags are the values §2.2.2 prescribes for each type (PUBLISH: QoS ≠ 3, no DUP
  on QoS 0);
- the remaining length takes at most four bytes and uses the fewest bytes possible (§2.2.3;
  a longer encoding of the same number is refused so that every packet has one encoding);
- strings are well-formed UTF-8 without U+0000 (§1.5.3);
- topic names carry no wildcard, topic filters put `#` last and alone, `+` alone (§4.7);
- CONNECT's reserved flag is 0, a will's QoS/retain only with the will flag, a password only
  with a user name (§3.1.2.3–§3.1.2.9).
QoS 2 flows (PUBREC/PUBREL/PUBCOMP) are not part of DPS (its docs grant QoS 1 at most), so their
packet types are refused like the reserved ones.

The module is longer than most (~600 lines) because it holds the eleven packet records and their
encoder/decoder pairs side by side, one short function per packet type; splitting by family
would scatter the dispatch tables that keep `encode_packet`/`decode_packet` total.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "MAX_REMAINING_LENGTH",
    "MAX_STRING_BYTES",
    "SUBSCRIPTION_FAILURE",
    "Connack",
    "ConnackCode",
    "Connect",
    "Disconnect",
    "MqttProtocolError",
    "Packet",
    "PacketType",
    "Pingreq",
    "Pingresp",
    "Puback",
    "Publish",
    "Suback",
    "Subscribe",
    "Unsuback",
    "Unsubscribe",
    "Will",
    "decode_packet",
    "encode_packet",
    "validate_topic_filter",
    "validate_topic_name",
]

# §2.2.3: four bytes of 7 bits each.
MAX_REMAINING_LENGTH = 268_435_455
# §1.5.3: strings carry a two-byte length prefix.
MAX_STRING_BYTES = 65_535
# §3.1.2.2: the only protocol level this codec speaks (MQTT 3.1.1).
PROTOCOL_NAME = "MQTT"
PROTOCOL_LEVEL = 4
# §3.9.3: a SUBACK return code that refuses the subscription.
SUBSCRIPTION_FAILURE = 0x80


class PacketType(enum.IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class ConnackCode(enum.IntEnum):
    """§3.2.2.3 connect return codes."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


class MqttProtocolError(Exception):
    """The peer broke MQTT 3.1.1. The connection must close.

    `connack_code` is the CONNACK refusal to send first when the spec names one (a CONNECT
    with an unsupported protocol level → 1); None means close without a CONNACK.
    """

    def __init__(self, message: str, *, connack_code: ConnackCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.connack_code = connack_code


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    message: bytes
    qos: int = 0
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    keep_alive: int
    clean_session: bool = True
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None


@dataclass(frozen=True, slots=True)
class Connack:
    return_code: ConnackCode
    session_present: bool = False


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    packet_id: int | None = None  # present exactly when qos > 0
    retain: bool = False
    dup: bool = False


@dataclass(frozen=True, slots=True)
class Puback:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[tuple[str, int], ...]  # (topic filter, requested QoS)


@dataclass(frozen=True, slots=True)
class Suback:
    packet_id: int
    return_codes: tuple[int, ...]  # granted QoS 0-2, or SUBSCRIPTION_FAILURE


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsuback:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Pingreq:
    pass


@dataclass(frozen=True, slots=True)
class Pingresp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    pass


Packet: TypeAlias = (
    Connect
    | Connack
    | Publish
    | Puback
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
)


# -- primitives -----------------------------------------------------------------------------


def encode_remaining_length(length: int) -> bytes:
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {length} out of range")
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def decode_remaining_length(
    data: bytes | bytearray | memoryview, offset: int
) -> tuple[int, int] | None:
    """(value, offset after it), or None when more bytes are needed. Raises MqttProtocolError."""
    value, multiplier = 0, 1
    for index in range(4):
        if offset + index >= len(data):
            return None
        byte = data[offset + index]
        value += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            if index > 0 and byte == 0:
                raise MqttProtocolError("remaining length is not minimally encoded")
            return value, offset + index + 1
        multiplier *= 128
    raise MqttProtocolError("remaining length takes more than four bytes")


def _encode_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > MAX_STRING_BYTES:
        raise ValueError("string longer than 65,535 bytes")
    return struct.pack("!H", len(raw)) + raw


def _encode_binary(raw: bytes) -> bytes:
    if len(raw) > MAX_STRING_BYTES:
        raise ValueError("binary field longer than 65,535 bytes")
    return struct.pack("!H", len(raw)) + raw


class _Reader:
    """Reads the variable header and payload of one complete packet; any shortfall is malformed
    (the remaining length already said how long the packet is)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.offset = 0

    def take(self, count: int) -> bytes:
        end = self.offset + count
        if end > len(self.body):
            raise MqttProtocolError("packet is shorter than its fields")
        chunk = self.body[self.offset : end]
        self.offset = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def uint16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def binary(self) -> bytes:
        return self.take(self.uint16())

    def string(self) -> str:
        return decode_string(self.binary())

    def packet_id(self) -> int:
        value = self.uint16()
        if value == 0:
            raise MqttProtocolError("packet identifier 0")  # §2.3.1
        return value

    def rest(self) -> bytes:
        chunk = self.body[self.offset :]
        self.offset = len(self.body)
        return chunk

    @property
    def at_end(self) -> bool:
        return self.offset == len(self.body)

    def finish(self) -> None:
        if not self.at_end:
            raise MqttProtocolError("packet is longer than its fields")


def decode_string(raw: bytes) -> str:
    """§1.5.3: well-formed UTF-8 (no surrogates, no overlongs) without U+0000."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MqttProtocolError("string is not well-formed UTF-8") from None
    if "\x00" in text:
        raise MqttProtocolError("string contains U+0000")
    return text


def validate_topic_name(topic: str) -> None:
    """§4.7.3: at least one character; no wildcard in a name."""
    if not topic:
        raise MqttProtocolError("empty topic name")
    if "+" in topic or "#" in topic:
        raise MqttProtocolError("wildcard in a topic name")


def validate_topic_filter(topic_filter: str) -> None:
    """§4.7.1: `#` only as the whole last level, `+` only as a whole level."""
    if not topic_filter:
        raise MqttProtocolError("empty topic filter")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise MqttProtocolError("'#' must be the last level, alone")
        if "+" in level and level != "+":
            raise MqttProtocolError("'+' must be a whole level")


# -- encoding -------------------------------------------------------------------------------


def encode_packet(packet: Packet) -> bytes:
    """The wire form of `packet`. Raises ValueError for a record no peer could accept
    (our own misuse: a field out of range), never MqttProtocolError."""
    first, body = _ENCODERS[type(packet)](packet)
    return bytes([first]) + encode_remaining_length(len(body)) + body


def _encode_connect(packet: Packet) -> tuple[int, bytes]:
    assert isinstance(packet, Connect)
    flags = 0x02 if packet.clean_session else 0
    payload = _encode_string(packet.client_id)
    if packet.will is not None:
        if packet.will.qos not in (0, 1, 2):
            raise ValueError("will QoS must be 0, 1 or 2")
        flags |= 0x04 | packet.will.qos << 3 | (0x20 if packet.will.retain else 0)
        payload += _encode_string(packet.will.topic) + _encode_binary(packet.will.message)
    if packet.username is not None:
        flags |= 0x80
        payload += _encode_string(packet.username)
    if packet.password is not None:
        if packet.username is None:
            raise ValueError("a password needs a user name (§3.1.2.9)")
        flags |= 0x40
        payload += _encode_binary(packet.password)
    if not 0 <= packet.keep_alive <= 0xFFFF:
        raise ValueError("keep alive out of range")
    header = _encode_string(PROTOCOL_NAME) + bytes([PROTOCOL_LEVEL, flags])
    return 0x10, header + struct.pack("!H", packet.keep_alive) + payload


def _encode_connack(packet: Packet) -> tuple[int, bytes]:
    assert isinstance(packet, Connack)
    return 0x20, bytes([1 if packet.session_present else 0, int(packet.return_code)])


def _encode_publish(packet: Packet) -> tuple[int, bytes]:
    assert isinstance(packet, Publish)
    if packet.qos not in (0, 1, 2) or (packet.qos > 0) != (packet.packet_id is not None):
        raise ValueError("a packet id goes with QoS 1 or 2, and only then")
    first = 0x30 | packet.qos << 1 | (0x08 if packet.dup else 0) | (0x01 if packet.retain else 0)
    body = _encode_string(packet.topic)
    if packet.packet_id is not None:
        body += _encode_id(packet.packet_id)
    return first, body + packet.payload


def _encode_id(packet_id: int) -> bytes:
    if not 1 <= packet_id <= 0xFFFF:
        raise ValueError("packet id must be 1-65535")
    return struct.pack("!H", packet_id)


def _encode_puback(packet: Packet) -> tuple[int, bytes]:
    assert isinstance(packet, Puback)
    return 0x40, _encode_id(packet.packet_id)


def _encode_subscribe(packet: Packet) -> tuple[int, bytes]:
    assert isinstance(packet, Subscribe)
    body = _encode_id(packet.packet_id)
    for topic_filter, qos in packet.subscriptions:
        body += _encode_string(topic_filter) + bytes([qos])
    return 0x82, body


def _encode_suback(packet: Packet) -> tuple[int, bytes]:
    assert isinstance(packet, Suback)
    return 0x90, _encode_id(packet.packet_id) + bytes(packet.return_codes)


def _encode_unsubscribe(packet: Packet) -> tuple[int, bytes]:
    assert isinstance(packet, Unsubscribe)
    body = _encode_id(packet.packet_id)
    for topic_filter in packet.topic_filters:
        body += _encode_string(topic_filter)
    return 0xA2, body


def _encode_unsuback(packet: Packet) -> tuple[int, bytes]:
    assert isinstance(packet, Unsuback)
    return 0xB0, _encode_id(packet.packet_id)


_EMPTY_TYPES: dict[type, int] = {Pingreq: 0xC0, Pingresp: 0xD0, Disconnect: 0xE0}


def _encode_empty(packet: Packet) -> tuple[int, bytes]:
    return _EMPTY_TYPES[type(packet)], b""


_ENCODERS = {
    Connect: _encode_connect,
    Connack: _encode_connack,
    Publish: _encode_publish,
    Puback: _encode_puback,
    Subscribe: _encode_subscribe,
    Suback: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    Unsuback: _encode_unsuback,
    Pingreq: _encode_empty,
    Pingresp: _encode_empty,
    Disconnect: _encode_empty,
}


# -- decoding -------------------------------------------------------------------------------


def decode_packet(
    data: bytes | bytearray | memoryview, *, max_packet_size: int = MAX_REMAINING_LENGTH + 5
) -> tuple[Packet, int] | None:
    """Decode the first packet of `data`.

    Returns `(packet, bytes consumed)`, or None when `data` holds only part of a packet (feed
    more). Raises MqttProtocolError when the bytes can never become a valid packet, including
    as soon as the fixed header announces a packet longer than `max_packet_size` bytes (so an
    oversize packet is refused before its body is buffered). Nothing else is raised.
    """
    if not data:
        return None
    first = data[0]
    header = decode_remaining_length(data, 1)
    if header is None:
        return None
    length, start = header
    if start + length > max_packet_size:
        raise MqttProtocolError(f"packet of {start + length} bytes exceeds {max_packet_size}")
    if len(data) < start + length:
        return None
    body = bytes(data[start : start + length])
    return _decode_body(first, body), start + length


_FIXED_FLAGS = {
    PacketType.CONNECT: 0,
    PacketType.CONNACK: 0,
    PacketType.PUBACK: 0,
    PacketType.SUBSCRIBE: 2,
    PacketType.SUBACK: 0,
    PacketType.UNSUBSCRIBE: 2,
    PacketType.UNSUBACK: 0,
    PacketType.PINGREQ: 0,
    PacketType.PINGRESP: 0,
    PacketType.DISCONNECT: 0,
}


def _decode_body(first: int, body: bytes) -> Packet:
    try:
        kind = PacketType(first >> 4)
    except ValueError:
        raise MqttProtocolError(f"unsupported packet type {first >> 4}") from None
    flags = first & 0x0F
    if kind is PacketType.PUBLISH:
        return _decode_publish(flags, _Reader(body))
    if flags != _FIXED_FLAGS[kind]:
        raise MqttProtocolError(f"reserved flags {flags:#x} on {kind.name}")
    reader = _Reader(body)
    packet = _DECODERS[kind](reader)
    reader.finish()
    return packet


def _decode_connect(reader: _Reader) -> Packet:
    name = reader.string()
    if name != PROTOCOL_NAME:
        raise MqttProtocolError(f"protocol name {name!r} is not MQTT")  # §3.1.2.1: no CONNACK
    level = reader.byte()
    if level != PROTOCOL_LEVEL:
        raise MqttProtocolError(
            f"protocol level {level} is not 4 (MQTT 3.1.1)",
            connack_code=ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION,
        )
    flags = reader.byte()
    _check_connect_flags(flags)
    keep_alive = reader.uint16()
    client_id = reader.string()
    will = None
    if flags & 0x04:
        will = Will(reader.string(), reader.binary(), (flags >> 3) & 0x03, bool(flags & 0x20))
        validate_topic_name(will.topic)
    username = reader.string() if flags & 0x80 else None
    password = reader.binary() if flags & 0x40 else None
    return Connect(client_id, keep_alive, bool(flags & 0x02), username, password, will)


def _check_connect_flags(flags: int) -> None:
    if flags & 0x01:
        raise MqttProtocolError("CONNECT reserved flag is set")  # §3.1.2.3
    will_qos = (flags >> 3) & 0x03
    if will_qos == 3:
        raise MqttProtocolError("will QoS 3")
    if not flags & 0x04 and (will_qos or flags & 0x20):
        raise MqttProtocolError("will QoS or retain without a will")
    if flags & 0x40 and not flags & 0x80:
        raise MqttProtocolError("password without a user name")


def _decode_connack(reader: _Reader) -> Packet:
    flags = reader.byte()
    if flags & 0xFE:
        raise MqttProtocolError("CONNACK reserved flags are set")
    code = reader.byte()
    try:
        return Connack(ConnackCode(code), bool(flags & 0x01))
    except ValueError:
        raise MqttProtocolError(f"CONNACK return code {code}") from None


def _decode_publish(flags: int, reader: _Reader) -> Packet:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MqttProtocolError("PUBLISH with QoS 3")  # §3.3.1.2
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise MqttProtocolError("DUP set on a QoS 0 PUBLISH")  # §3.3.1.1
    topic = reader.string()
    validate_topic_name(topic)
    packet_id = reader.packet_id() if qos else None
    return Publish(topic, reader.rest(), qos, packet_id, bool(flags & 0x01), dup)


def _decode_puback(reader: _Reader) -> Packet:
    return Puback(reader.packet_id())


def _decode_subscribe(reader: _Reader) -> Packet:
    packet_id = reader.packet_id()
    subscriptions: list[tuple[str, int]] = []
    while not reader.at_end:
        topic_filter = reader.string()
        validate_topic_filter(topic_filter)
        qos = reader.byte()
        if qos > 2:
            raise MqttProtocolError("requested QoS byte is not 0, 1 or 2")  # §3.8.3.1
        subscriptions.append((topic_filter, qos))
    if not subscriptions:
        raise MqttProtocolError("SUBSCRIBE without a topic filter")  # §3.8.3
    return Subscribe(packet_id, tuple(subscriptions))


def _decode_suback(reader: _Reader) -> Packet:
    packet_id = reader.packet_id()
    codes = tuple(reader.rest())
    if not codes or any(code not in (0, 1, 2, SUBSCRIPTION_FAILURE) for code in codes):
        raise MqttProtocolError("SUBACK return codes")
    return Suback(packet_id, codes)


def _decode_unsubscribe(reader: _Reader) -> Packet:
    packet_id = reader.packet_id()
    filters: list[str] = []
    while not reader.at_end:
        topic_filter = reader.string()
        validate_topic_filter(topic_filter)
        filters.append(topic_filter)
    if not filters:
        raise MqttProtocolError("UNSUBSCRIBE without a topic filter")  # §3.10.3
    return Unsubscribe(packet_id, tuple(filters))


def _decode_unsuback(reader: _Reader) -> Packet:
    return Unsuback(reader.packet_id())


def _decode_empty(kind: PacketType) -> Callable[[_Reader], Packet]:
    empty: dict[PacketType, Packet] = {
        PacketType.PINGREQ: Pingreq(),
        PacketType.PINGRESP: Pingresp(),
        PacketType.DISCONNECT: Disconnect(),
    }
    made = empty[kind]
    return lambda reader: made


_DECODERS: dict[PacketType, Callable[[_Reader], Packet]] = {
    PacketType.CONNECT: _decode_connect,
    PacketType.CONNACK: _decode_connack,
    PacketType.PUBACK: _decode_puback,
    PacketType.SUBSCRIBE: _decode_subscribe,
    PacketType.SUBACK: _decode_suback,
    PacketType.UNSUBSCRIBE: _decode_unsubscribe,
    PacketType.UNSUBACK: _decode_unsuback,
    PacketType.PINGREQ: _decode_empty(PacketType.PINGREQ),
    PacketType.PINGRESP: _decode_empty(PacketType.PINGRESP),
    PacketType.DISCONNECT: _decode_empty(PacketType.DISCONNECT),
}
