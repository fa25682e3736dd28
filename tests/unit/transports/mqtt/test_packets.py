"""MQTT 3.1.1 codec: round trips, truncations, strict validation, fuzz (STYLE §3.4 habit 4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    Will,
    decode_packet,
    decode_remaining_length,
    encode_packet,
    encode_remaining_length,
    validate_topic_filter,
)

EVERY_TYPE: list[Packet] = [
    Connect("dev-1", 60, False, "0ne00000ABC/registrations/dev-1/api-version=2019-03-31", b"SAS"),
    Connect("", 0, True),
    Connect("d", 180, True, "u", None, Will("will/topic", b"bye", 1, True)),
    Connack(ConnackCode.ACCEPTED),
    Connack(ConnackCode.NOT_AUTHORIZED, session_present=True),
    Publish("$dps/registrations/res/200/?$rid=1", b'{"status":"assigned"}', 1, 7),
    Publish("a/b", b"", 0),
    Publish("a/b", b"x" * 300, 2, 65535, retain=True, dup=True),
    Puback(1),
    Subscribe(2, (("$dps/registrations/res/#", 1), ("a/+/c", 2))),
    Suback(2, (1, SUBSCRIPTION_FAILURE)),
    Unsubscribe(3, ("$dps/registrations/res/#",)),
    Unsuback(3),
    Pingreq(),
    Pingresp(),
    Disconnect(),
]


@pytest.mark.parametrize("packet", EVERY_TYPE, ids=lambda p: type(p).__name__)
def test_every_packet_type_round_trips(packet: Packet) -> None:
    wire = encode_packet(packet)
    assert decode_packet(wire + b"\xe0") == (packet, len(wire))


@pytest.mark.parametrize("packet", EVERY_TYPE, ids=lambda p: type(p).__name__)
def test_every_proper_prefix_needs_more_data(packet: Packet) -> None:
    wire = encode_packet(packet)
    for length in range(len(wire)):
        assert decode_packet(wire[:length]) is None


def test_python_sdk_connect_bytes_decode() -> None:
    # paho 1.6.1, clean session 0, keep-alive 60, user name + password (clients.md §2).
    wire = bytes.fromhex("101500044d51545404c0003c0001640001750003") + b"sas"

    packet, _ = decode_packet(wire)  # type: ignore[misc]

    assert packet == Connect("d", 60, False, "u", b"sas")


@pytest.mark.parametrize("length", [0, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455])
def test_remaining_length_round_trips_at_every_boundary(length: int) -> None:
    encoded = encode_remaining_length(length)
    assert decode_remaining_length(encoded, 0) == (length, len(encoded))


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x30\x80\x00", "minimally"),  # 0 in two bytes
        (b"\x30\xff\xff\xff\xff\x01", "four bytes"),
        (b"\x00\x00", "packet type 0"),
        (b"\xf0\x00", "packet type 15"),
        (b"\x50\x02\x00\x01", "packet type 5"),  # PUBREC: no QoS 2 flows in DPS
        (b"\xc1\x00", "reserved flags"),  # PINGREQ with a flag
        (b"\x80\x06\x00\x01\x00\x01a\x01", "reserved flags"),  # SUBSCRIBE flags must be 2
        (b"\x36\x05\x00\x01a\x00\x01", "QoS 3"),
        (b"\x38\x03\x00\x01a", "DUP"),
        (b"\x30\x03\x00\x01+", "wildcard"),
        (b"\x30\x02\x00\x00", "empty topic"),
        (b"\x30\x04\x00\x02\xc3\x28", "UTF-8"),
        (b"\x30\x03\x00\x01\x00", r"U\+0000"),
        (b"\x32\x05\x00\x01a\x00\x00", "packet identifier 0"),
        (b"\x82\x02\x00\x01", "without a topic filter"),
        (b"\x82\x06\x00\x01\x00\x01a\x03", "QoS byte"),
        (b"\x82\x07\x00\x01\x00\x02a#\x01", "'#'"),
        (b"\xa2\x02\x00\x01", "without a topic filter"),
        (b"\x40\x03\x00\x01\x00", "longer than its fields"),
        (b"\x40\x01\x00", "shorter than its fields"),
        (b"\xd0\x01\x00", "longer than its fields"),
    ],
)
def test_malformed_packets_raise_our_protocol_error(wire: bytes, reason: str) -> None:
    with pytest.raises(MqttProtocolError, match=reason):
        decode_packet(wire)


def _connect_with_flags(flags: int, level: int = 4, name: bytes = b"MQTT") -> bytes:
    body = len(name).to_bytes(2, "big") + name + bytes([level, flags]) + b"\x00\x3c\x00\x01d"
    return bytes([0x10, len(body)]) + body


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (0x03, "reserved flag"),
        (0x18 | 0x04, "will QoS 3"),
        (0x08, "without a will"),
        (0x20, "without a will"),
        (0x40, "password without a user name"),
    ],
)
def test_connect_flag_rules_are_enforced(flags: int, reason: str) -> None:
    with pytest.raises(MqttProtocolError, match=reason) as caught:
        decode_packet(_connect_with_flags(flags))
    assert caught.value.connack_code is None


def test_connect_with_another_protocol_level_carries_connack_1() -> None:
    with pytest.raises(MqttProtocolError) as caught:
        decode_packet(_connect_with_flags(0x02, level=5))
    assert caught.value.connack_code is ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION


def test_connect_with_another_protocol_name_closes_without_connack() -> None:
    with pytest.raises(MqttProtocolError, match="protocol name") as caught:
        decode_packet(_connect_with_flags(0x02, name=b"MQIsdp"))
    assert caught.value.connack_code is None


def test_a_packet_over_the_limit_is_refused_from_its_fixed_header_alone() -> None:
    header = b"\x30" + encode_remaining_length(10_000)

    with pytest.raises(MqttProtocolError, match="exceeds 4096"):
        decode_packet(header, max_packet_size=4096)


@pytest.mark.parametrize("topic_filter", ["#", "a/#", "+", "+/+/c", "$dps/registrations/res/#"])
def test_valid_topic_filters_pass(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize("topic_filter", ["", "a#", "#/a", "a/b+", "a/+b/c"])
def test_invalid_topic_filters_are_refused(topic_filter: str) -> None:
    with pytest.raises(MqttProtocolError):
        validate_topic_filter(topic_filter)


# -- Hypothesis ---------------------------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
_topic = _text.filter(lambda t: t and "+" not in t and "#" not in t)
_ids = st.integers(1, 0xFFFF)
_filter = (
    st.lists(
        st.one_of(
            st.just("+"), _text.filter(lambda t: "+" not in t and "#" not in t and "/" not in t)
        ),
        min_size=1,
        max_size=4,
    )
    .map("/".join)
    .filter(bool)
)


@st.composite
def _publishes(draw: st.DrawFn) -> Publish:
    qos = draw(st.integers(0, 2))
    return Publish(
        draw(_topic),
        draw(st.binary(max_size=200)),
        qos,
        draw(_ids) if qos else None,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
    )


@st.composite
def _connects(draw: st.DrawFn) -> Connect:
    username = draw(st.none() | _text)
    will = draw(
        st.none()
        | st.builds(Will, _topic, st.binary(max_size=50), st.integers(0, 2), st.booleans())
    )
    return Connect(
        draw(_text),
        draw(st.integers(0, 0xFFFF)),
        draw(st.booleans()),
        username,
        draw(st.none() | st.binary(max_size=50)) if username is not None else None,
        will,
    )


packets = st.one_of(
    _connects(),
    st.builds(Connack, st.sampled_from(ConnackCode), st.booleans()),
    _publishes(),
    st.builds(Puback, _ids),
    st.builds(
        Subscribe,
        _ids,
        st.lists(st.tuples(_filter, st.integers(0, 2)), min_size=1, max_size=4).map(tuple),
    ),
    st.builds(
        Suback,
        _ids,
        st.lists(st.sampled_from([0, 1, 2, SUBSCRIPTION_FAILURE]), min_size=1, max_size=4).map(
            tuple
        ),
    ),
    st.builds(Unsubscribe, _ids, st.lists(_filter, min_size=1, max_size=4).map(tuple)),
    st.builds(Unsuback, _ids),
    st.just(Pingreq()),
    st.just(Pingresp()),
    st.just(Disconnect()),
)


@given(packets)
def test_generated_packets_round_trip(packet: Packet) -> None:
    wire = encode_packet(packet)
    assert decode_packet(wire) == (packet, len(wire))


@given(st.binary(max_size=300))
def test_random_bytes_give_a_packet_need_more_data_or_our_error(data: bytes) -> None:
    try:
        result = decode_packet(data)
    except MqttProtocolError:
        return
    assert result is None or 0 < result[1] <= len(data)


@given(packets, st.data())
def test_truncated_or_corrupted_packets_only_ever_give_our_error(
    packet: Packet, data: st.DataObject
) -> None:
    wire = bytearray(encode_packet(packet))
    cut = data.draw(st.integers(0, len(wire)))
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] = data.draw(st.integers(0, 255))
    try:
        decode_packet(bytes(wire[:cut]))
    except MqttProtocolError:
        pass
