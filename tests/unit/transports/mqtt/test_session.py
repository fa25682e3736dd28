"""The server session, driven in pairs with our own client-side encoder, without sockets
(STYLE §3.4 habit 3): events, bytes and states asserted together."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendps.transports.mqtt.packets import (
    Connack,
    ConnackCode,
    Connect,
    Disconnect,
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
from opendps.transports.mqtt.session import (
    ConnectionClosed,
    ConnectReceived,
    DisconnectReceived,
    Event,
    PublishAcknowledged,
    PublishReceived,
    ServerSession,
    SessionState,
    Subscribed,
    Unsubscribed,
)

FILTER = "$dps/registrations/res/#"
CONNECT = Connect("dev-1", 60, False, "0ne00000ABC/registrations/dev-1/api-version=x", b"sas")
REGISTER = Publish("$dps/registrations/PUT/iotdps-register/?$rid=1", b"{}", 1, 5)


def wire(*packets: Packet) -> bytes:
    return b"".join(encode_packet(p) for p in packets)


def read(data: bytes) -> list[Packet]:
    out: list[Packet] = []
    while data:
        decoded = decode_packet(data)
        assert decoded is not None
        out.append(decoded[0])
        data = data[decoded[1] :]
    return out


def session(**options: object) -> ServerSession:
    return ServerSession(0.0, allowed_filters=frozenset({FILTER}), **options)  # type: ignore[arg-type]


def connected(now: float = 0.0) -> ServerSession:
    server = session()
    assert server.receive_data(wire(CONNECT), now) == [ConnectReceived(CONNECT)]
    assert server.accept(now) == []
    server.data_to_send()
    return server


def test_connect_is_reported_and_accept_answers_connack_0_session_present_0() -> None:
    server = session()

    events = server.receive_data(wire(CONNECT), 1.0)

    assert events == [ConnectReceived(CONNECT)] and server.state is SessionState.CONNECTING
    assert server.data_to_send() == b""
    server.accept(1.0)
    assert read(server.data_to_send()) == [Connack(ConnackCode.ACCEPTED, session_present=False)]
    assert server.state is SessionState.CONNECTED


def test_refuse_answers_the_connack_code_and_closes() -> None:
    server = session()
    server.receive_data(wire(CONNECT), 0)

    events = server.refuse(ConnackCode.NOT_AUTHORIZED, "bad")

    assert events == [ConnectionClosed("bad")] and server.state is SessionState.CLOSED
    assert read(server.data_to_send()) == [Connack(ConnackCode.NOT_AUTHORIZED)]
    assert server.receive_data(wire(Pingreq()), 1) == [] and server.deadline is None


def test_packets_behind_the_connect_wait_for_the_decision() -> None:
    server = session()
    subscribe = Subscribe(1, ((FILTER, 1),))

    assert server.receive_data(wire(CONNECT, subscribe), 0) == [ConnectReceived(CONNECT)]

    assert server.accept(0) == [Subscribed((FILTER,), (1,))]
    assert read(server.data_to_send()) == [Connack(ConnackCode.ACCEPTED), Suback(1, (1,))]


def test_subscribe_grants_at_most_qos_1_to_the_dps_filter_and_fails_the_others() -> None:
    server = connected()

    events = server.receive_data(wire(Subscribe(2, ((FILTER, 2), ("devices/#", 1)))), 1)

    assert events == [Subscribed((FILTER, "devices/#"), (1, 0x80))]
    assert read(server.data_to_send()) == [Suback(2, (1, 0x80))]
    assert server.subscriptions == {FILTER}


def test_qos1_publish_is_acknowledged_and_reported() -> None:
    server = connected()

    events = server.receive_data(wire(REGISTER), 1)

    assert events == [PublishReceived(REGISTER.topic, b"{}", 1)]
    assert read(server.data_to_send()) == [Puback(5)]


def test_qos0_publish_is_reported_without_puback() -> None:
    server = connected()

    events = server.receive_data(wire(Publish("a", b" ")), 1)

    assert events == [PublishReceived("a", b" ", 0)] and server.data_to_send() == b""


def test_answers_go_out_at_qos1_only_when_subscribed_and_their_puback_is_reported() -> None:
    server = connected()
    topic = "$dps/registrations/res/200/?$rid=1"
    assert server.publish(topic, b"{}") is False  # not subscribed yet: MQTT delivers nothing
    server.receive_data(wire(Subscribe(1, ((FILTER, 1),))), 1)
    server.data_to_send()

    assert server.publish(topic, b"{}") is True

    [answer] = read(server.data_to_send())
    assert isinstance(answer, Publish) and answer.qos == 1 and answer.topic == topic
    assert server.unacknowledged == 1
    assert answer.packet_id is not None
    assert server.receive_data(wire(Puback(answer.packet_id)), 2) == [
        PublishAcknowledged(answer.packet_id)
    ]
    assert server.unacknowledged == 0


def test_unsubscribe_is_answered_and_removes_the_subscription() -> None:
    server = connected()
    server.receive_data(wire(Subscribe(1, ((FILTER, 1),))), 1)
    server.data_to_send()

    events = server.receive_data(wire(Unsubscribe(9, (FILTER,))), 2)

    assert events == [Unsubscribed((FILTER,))]
    assert read(server.data_to_send()) == [Unsuback(9)] and server.subscriptions == frozenset()


def test_pingreq_is_answered_pingresp() -> None:
    server = connected()

    assert server.receive_data(wire(Pingreq()), 1) == []
    assert read(server.data_to_send()) == [Pingresp()]


def test_disconnect_ends_the_session_cleanly() -> None:
    server = connected()

    assert server.receive_data(wire(Disconnect()), 1) == [DisconnectReceived()]
    assert server.state is SessionState.CLOSED


@pytest.mark.parametrize(
    "packet",
    [Pingreq(), Publish("a", b""), Subscribe(1, ((FILTER, 1),)), Connack(ConnackCode.ACCEPTED)],
)
def test_anything_but_connect_first_closes(packet: Packet) -> None:
    server = session()

    [event] = server.receive_data(wire(packet), 0)

    assert isinstance(event, ConnectionClosed) and server.state is SessionState.CLOSED


@pytest.mark.parametrize(
    "packet", [CONNECT, Connack(ConnackCode.ACCEPTED), Suback(1, (1,)), Pingresp(), Unsuback(1)]
)
def test_a_second_connect_or_a_server_packet_from_the_client_closes(packet: Packet) -> None:
    server = connected()

    [event] = server.receive_data(wire(packet), 1)

    assert isinstance(event, ConnectionClosed)


def test_qos2_publish_closes() -> None:
    server = connected()

    [event] = server.receive_data(wire(Publish("a", b"", 2, 1)), 1)

    assert isinstance(event, ConnectionClosed) and "QoS 2" in event.reason


def test_puback_for_an_unknown_id_closes() -> None:
    server = connected()

    [event] = server.receive_data(wire(Puback(42)), 1)

    assert isinstance(event, ConnectionClosed)


def test_empty_client_id_without_clean_session_gets_connack_2() -> None:
    server = session()

    [event] = server.receive_data(wire(Connect("", 60, clean_session=False)), 0)

    assert isinstance(event, ConnectionClosed)
    assert read(server.data_to_send()) == [Connack(ConnackCode.IDENTIFIER_REJECTED)]


def test_wrong_protocol_level_gets_connack_1() -> None:
    server = session()
    body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00\x01d"

    [event] = server.receive_data(bytes([0x10, len(body)]) + body, 0)

    assert isinstance(event, ConnectionClosed)
    assert read(server.data_to_send()) == [Connack(ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION)]


def test_oversize_packet_closes_without_waiting_for_its_body() -> None:
    server = ServerSession(0, allowed_filters=frozenset({FILTER}), max_packet_bytes=1024)
    server.receive_data(wire(CONNECT), 0)
    server.accept(0)

    [event] = server.receive_data(b"\x30\x80\x10", 1)  # announces 2,048 bytes

    assert isinstance(event, ConnectionClosed) and "exceeds" in event.reason


def test_connect_deadline_closes_a_silent_connection() -> None:
    server = ServerSession(0, allowed_filters=frozenset(), connect_timeout=10)

    assert server.deadline == 10 and server.check_deadline(9.9) == []
    assert server.check_deadline(10) == [ConnectionClosed("no CONNECT in time")]


def test_keep_alive_deadline_is_one_and_a_half_periods_after_the_last_packet() -> None:
    server = connected(now=100)
    assert server.deadline == 190

    server.receive_data(wire(Pingreq()), 150)

    assert server.deadline == 240 and server.check_deadline(239) == []
    assert server.check_deadline(240) == [ConnectionClosed("keep-alive expired")]


def test_keep_alive_zero_never_expires() -> None:
    server = session()
    server.receive_data(wire(Connect("d", 0)), 0)
    server.accept(0)

    assert server.deadline is None


def test_close_from_our_side_ends_the_session() -> None:
    server = connected()

    assert server.close("shutdown") == [ConnectionClosed("shutdown")]
    assert server.close("again") == []


def test_driver_misuse_raises_a_local_error() -> None:
    server = session()
    with pytest.raises(RuntimeError):
        server.accept(0)
    with pytest.raises(RuntimeError):
        server.publish("a", b"")


FLOW = wire(
    CONNECT,
    Subscribe(1, ((FILTER, 1),)),
    REGISTER,
    Pingreq(),
    Unsubscribe(2, (FILTER,)),
    Disconnect(),
)


def _run(chunks: list[bytes]) -> tuple[list[Event], bytes]:
    server = session()
    events: list[Event] = []
    for chunk in chunks:
        new = server.receive_data(chunk, 0)
        events += new
        if any(isinstance(e, ConnectReceived) for e in new):
            events += server.accept(0)
    return events, server.data_to_send()


def test_feeding_split_at_every_byte_gives_the_same_events_and_bytes() -> None:
    whole = _run([FLOW])
    assert len(whole[0]) == 5

    for cut in range(1, len(FLOW)):
        assert _run([FLOW[:cut], FLOW[cut:]]) == whole
    assert _run([FLOW[i : i + 1] for i in range(len(FLOW))]) == whole


@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_never_raise_only_close(data: bytes, after_connect: bool) -> None:
    server = connected() if after_connect else session()

    events = server.receive_data(data, 1)

    closed = [e for e in events if isinstance(e, ConnectionClosed)]
    assert len(closed) <= 1
    if closed:
        assert server.state is SessionState.CLOSED and events[-1] is closed[0]


def test_a_session_awaiting_our_decision_has_no_deadline_and_can_be_closed() -> None:
    server = session()
    server.receive_data(wire(CONNECT), 0)

    assert server.state is SessionState.CONNECTING and server.deadline is None
    assert server.check_deadline(1_000) == []
    assert server.close("shutdown") == [ConnectionClosed("shutdown")]
    assert server.state is SessionState.CLOSED
