"""The sans-I/O AMQP server driver against proton's own client engine, in memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pytest
from proton import Disposition, Message, Receiver, Sender

from opendps.transports.amqp.driver import (
    AmqpLimits,
    AmqpServerConnection,
    Authenticated,
    ConnectionFailed,
    RegistrationAddress,
    RequestReceived,
    parse_address,
)
from opendps.transports.amqp.sasl import PLAIN

from .pair import ADDRESS, ProtonClient, pump

TOKEN = "SharedAccessSignature sr=0ne00000001%2Fregistrations%2Fdev-1&sig=abc&se=1"


def connected(client: ProtonClient, server: AmqpServerConnection) -> tuple[Sender, Receiver]:
    sender, receiver = client.open_links()
    pump(client, server)
    return sender, receiver


def register_message(correlation_id: str = "corr-1") -> Message:
    return Message(
        body=b'{"registrationId":"dev-1"}',
        inferred=True,
        correlation_id=correlation_id,
        properties={"iotdps-operation-type": "iotdps-register", "iotdps-forceRegistration": True},
    )


def requests(events: Sequence[object]) -> list[RequestReceived]:
    return [event for event in events if isinstance(event, RequestReceived)]


def test_sasl_plain_hands_the_username_and_token_to_the_caller() -> None:
    server = AmqpServerConnection()
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    client.open_links()

    events = pump(client, server)

    assert server.identity is not None
    assert server.identity.mechanism == PLAIN
    assert server.identity.username == ADDRESS and server.identity.password == TOKEN
    assert any(isinstance(event, Authenticated) for event in events)
    assert TOKEN not in repr(server.identity)


def test_without_sasl_the_connection_opens_with_no_identity() -> None:
    server = AmqpServerConnection()
    client = ProtonClient()
    sender, _receiver = connected(client, server)

    assert server.identity is None and server.opened
    assert sender.credit > 0


def test_server_grants_credit_on_the_client_sender_link() -> None:
    server = AmqpServerConnection()
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    sender, receiver = connected(client, server)

    assert sender.credit == 10
    assert receiver.remote_source.address == ADDRESS


def test_a_register_message_becomes_a_request_with_its_properties() -> None:
    server = AmqpServerConnection()
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    sender, _receiver = connected(client, server)
    client.send(sender, register_message(), "t1")

    [request] = requests(pump(client, server))

    assert request.address == RegistrationAddress("0ne00000001", "dev-1")
    assert request.operation_type == "iotdps-register"
    assert request.correlation_id == "corr-1"
    assert request.body == b'{"registrationId":"dev-1"}'
    assert request.force_registration is True


def test_reply_is_a_data_section_with_the_same_correlation_id_and_the_request_accepted() -> None:
    server = AmqpServerConnection()
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    sender, _receiver = connected(client, server)
    client.send(sender, register_message("c-9"), "t1")
    [request] = requests(pump(client, server))

    server.reply(request.request_id, b'{"status":"assigned"}', {"retry-after": "2"})
    pump(client, server)

    [reply] = client.received
    assert reply.inferred and bytes(cast(bytes, reply.body)) == b'{"status":"assigned"}'
    assert reply.correlation_id == "c-9"
    assert reply.properties == {"retry-after": "2"}
    assert client.outcomes["t1"] == (Disposition.ACCEPTED, None)


def test_reject_settles_the_request_with_the_amqp_error() -> None:
    server = AmqpServerConnection()
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    sender, _receiver = connected(client, server)
    client.send(sender, register_message(), "t1")
    [request] = requests(pump(client, server))

    server.reject(request.request_id, "amqp:unauthorized-access", '{"errorCode":401002}', None)
    pump(client, server)

    state, condition = client.outcomes["t1"]
    assert state == Disposition.REJECTED
    assert condition.name == "amqp:unauthorized-access"
    assert condition.description == '{"errorCode":401002}'
    assert client.received == []


def test_credit_is_replenished_after_each_answer() -> None:
    server = AmqpServerConnection()
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    sender, _receiver = connected(client, server)
    for index in range(3):
        client.send(sender, register_message(f"c{index}"), f"t{index}")
        [request] = requests(pump(client, server))
        server.reply(request.request_id, b"{}", {})
        pump(client, server)

    assert sender.credit == 10
    assert len(client.received) == 3


def test_detach_end_and_close_are_answered_and_the_connection_ends() -> None:
    server = AmqpServerConnection()
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    sender, receiver = connected(client, server)

    sender.close()
    receiver.close()
    sender.session.close()
    client.connection.close()
    pump(client, server)

    assert client.events.count("PN_LINK_REMOTE_CLOSE") == 2
    assert "PN_SESSION_REMOTE_CLOSE" in client.events
    assert client.closed_by_server
    assert server.ended


def test_a_reply_after_the_link_detached_is_dropped_quietly() -> None:
    server = AmqpServerConnection()
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    sender, receiver = connected(client, server)
    client.send(sender, register_message(), "t1")
    [request] = requests(pump(client, server))
    sender.close()
    receiver.close()
    pump(client, server)

    server.reply(request.request_id, b"{}", {})
    pump(client, server)

    assert client.received == []


def test_a_link_with_a_foreign_address_is_refused() -> None:
    server = AmqpServerConnection()
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    sender, _receiver = client.open_links("$cbs")
    pump(client, server)

    assert sender.remote_condition is not None
    assert sender.remote_condition.name == "amqp:not-found"


def test_an_oversized_message_closes_the_connection_with_message_size_exceeded() -> None:
    server = AmqpServerConnection(AmqpLimits(max_message_bytes=1024))
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    sender, _receiver = connected(client, server)
    big = Message(body=b"x" * 5000, inferred=True)
    client.send(sender, big, "big")

    events = pump(client, server)

    assert requests(events) == []
    assert any(isinstance(event, ConnectionFailed) for event in events)
    condition = client.connection.remote_condition
    assert condition is not None and condition.name == "amqp:link:message-size-exceeded"


def test_frames_larger_than_the_limit_are_a_framing_error() -> None:
    server = AmqpServerConnection(AmqpLimits(max_frame_bytes=512))
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    client.connection.open()
    pump(client, server)
    frame = (70000).to_bytes(4, "big") + b"\x02\x00\x00\x00" + b"\x00" * 100

    events = server.receive_data(frame)
    server.data_to_send()

    assert any(isinstance(event, ConnectionFailed) for event in events)
    assert server.ended


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("0ne00000001/registrations/dev-1", RegistrationAddress("0ne00000001", "dev-1")),
        (
            "amqps://global.azure-devices-provisioning.net/0ne1/registrations/d",
            RegistrationAddress("0ne1", "d"),
        ),
        ("0ne1/Registrations/d", RegistrationAddress("0ne1", "d")),
        ("0ne1/registrations/", None),
        ("0ne1/devices/d", None),
        ("amqps://host", None),
        ("", None),
        (None, None),
        ("a/registrations/b/c", None),
    ],
)
def test_link_addresses_are_parsed_with_or_without_the_amqps_prefix(
    address: str | None, expected: RegistrationAddress | None
) -> None:
    assert parse_address(address) == expected


def test_idle_client_is_closed_by_proton_when_the_idle_timeout_passes() -> None:
    server = AmqpServerConnection(AmqpLimits(idle_timeout_seconds=1))
    client = ProtonClient(user=ADDRESS, password=TOKEN)
    client.connection.open()
    pump(client, server)
    server.tick(100.0)

    events, _deadline = server.tick(200.0)
    client.feed(server.data_to_send())

    assert any(isinstance(event, ConnectionFailed) for event in events)
    condition = client.connection.remote_condition
    assert condition is not None and condition.name == "amqp:resource-limit-exceeded"
