"""Device registration over AMQP through the real TLS front door (and WebSockets), the real
engine and a real SQLite store, with proton's engine as the device."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from proton import Disposition, Message
from tests.integration.engine.world import ID_SCOPE, World
from tests.unit.transports.amqp.pair import ProtonClient

from opendps.model.errors import UNAUTHORIZED
from opendps.transports.amqp.driver import AmqpLimits

from .conftest import (
    Device,
    Servers,
    json_body,
    open_tls,
    open_websocket,
    register_properties,
    start_servers,
)

ADDRESS = f"{ID_SCOPE}/registrations/dev-1"


async def sas_device(servers: Servers, world: World, *, key_for: str = "dev-1") -> Device:
    token = world.credential(key_for).token
    client = ProtonClient(user=ADDRESS, password=token)
    return Device(await open_tls(servers), client)


async def test_individual_enrollment_registers_with_sasl_plain_and_reply_is_a_data_section(
    servers: Servers, world: World
) -> None:
    await world.add_individual("dev-1")
    device = await sas_device(servers, world)
    sender, _receiver = device.client.open_links(ADDRESS)
    await device.until(lambda: sender.credit > 0)

    reply = await device.request(
        sender, register_properties(), b'{"registrationId":"dev-1"}', "corr-1"
    )

    assert isinstance(reply, Message)
    assert reply.correlation_id == "corr-1"
    body = json_body(reply)
    assert body["status"] == "assigned"
    assert body["registrationState"]["assignedHub"] == "hub1.example.net"
    assert reply.properties["iotdps-status"] == "assigned"
    stored = await world.store.get_registration_state(world.instance.id, "dev-1")
    assert stored is not None and stored.assigned_hub == "hub1.example.net"
    await device.wire.close()


async def test_operation_status_answers_over_the_same_links(servers: Servers, world: World) -> None:
    await world.add_individual("dev-1")
    device = await sas_device(servers, world)
    sender, _receiver = device.client.open_links(ADDRESS)
    await device.until(lambda: sender.credit > 0)
    first = await device.request(sender, register_properties(), b"{}", "corr-1")
    assert isinstance(first, Message)
    operation_id = json_body(first)["operationId"]

    poll = await device.request(
        sender,
        {
            "iotdps-operation-type": "iotdps-get-operationstatus",
            "iotdps-operation-id": operation_id,
        },
        "",
        "corr-2",
    )

    assert isinstance(poll, Message) and poll.correlation_id == "corr-2"
    assert json_body(poll)["status"] == "assigned"
    await device.wire.close()


async def test_wrong_key_is_rejected_with_unauthorized_access_and_nothing_is_stored(
    servers: Servers, world: World
) -> None:
    await world.add_individual("dev-1")
    token = world.credential("dev-1", key="AAAA" * 11).token
    device = Device(await open_tls(servers), ProtonClient(user=ADDRESS, password=token))
    sender, _receiver = device.client.open_links(ADDRESS)
    await device.until(lambda: sender.credit > 0)

    outcome = await device.request(sender, register_properties(), b"{}", "corr-1")

    assert isinstance(outcome, tuple)
    state, condition = outcome
    assert state == Disposition.REJECTED
    assert condition.name == "amqp:unauthorized-access"
    assert json.loads(condition.description)["errorCode"] == UNAUTHORIZED
    assert await world.store.get_registration_state(world.instance.id, "dev-1") is None
    await device.wire.close()


async def test_without_sasl_and_without_a_certificate_the_request_is_unauthorized(
    servers: Servers, world: World
) -> None:
    await world.add_individual("dev-1")
    device = Device(await open_tls(servers), ProtonClient())
    sender, _receiver = device.client.open_links(ADDRESS)
    await device.until(lambda: sender.credit > 0)

    outcome = await device.request(sender, register_properties(), b"{}", "corr-1")

    assert isinstance(outcome, tuple)
    assert outcome[1].name == "amqp:unauthorized-access"
    await device.wire.close()


async def test_unknown_operation_type_is_rejected_as_an_argument_error(
    servers: Servers, world: World
) -> None:
    device = await sas_device(servers, world)
    sender, _receiver = device.client.open_links(ADDRESS)
    await device.until(lambda: sender.credit > 0)

    outcome = await device.request(
        sender, {"iotdps-operation-type": "iotdps-get-registration"}, b"{}", "corr-1"
    )

    assert isinstance(outcome, tuple)
    assert outcome[1].name == "com.microsoft:argument-error"
    await device.wire.close()


async def test_detach_end_and_close_are_each_answered_then_the_server_hangs_up(
    servers: Servers, world: World
) -> None:
    device = await sas_device(servers, world)
    sender, receiver = device.client.open_links(ADDRESS)
    await device.until(lambda: sender.credit > 0)

    sender.close()
    receiver.close()
    sender.session.close()
    device.client.connection.close()
    await device.until(lambda: device.server_closed)

    assert "PN_LINK_REMOTE_CLOSE" in device.client.events
    assert "PN_SESSION_REMOTE_CLOSE" in device.client.events
    assert device.client.closed_by_server


async def test_bad_link_address_is_refused_with_not_found(servers: Servers, world: World) -> None:
    device = await sas_device(servers, world)
    sender, _receiver = device.client.open_links("not-a-registration")
    await device.until(lambda: sender.remote_condition is not None)

    assert sender.remote_condition is not None
    assert sender.remote_condition.name == "amqp:not-found"
    await device.wire.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"AMQP\x00\x01\x00\x00" + b"\xff" * 64,
        b"AMQP\x03\x01\x00\x00" + b"\x00\x00\x00\x09\x02\x01\x00\x00\x00",
        b"AMQP\x03\x01\x00\x00" + b"\x00\x10\x00\x00\x02\x01\x00\x00",  # 1 MiB SASL frame
    ],
)
async def test_garbage_closes_the_connection_and_the_server_keeps_serving(
    servers: Servers, world: World, garbage: bytes
) -> None:
    wire = await open_tls(servers)
    await wire.send(garbage)
    async with asyncio.timeout(5):
        while await wire.receive():
            pass  # the server answers (a header, an outcome or a CLOSE), then hangs up
    await wire.close()

    await world.add_individual("dev-1")
    device = await sas_device(servers, world)
    sender, _receiver = device.client.open_links(ADDRESS)
    await device.until(lambda: sender.credit > 0)
    reply = await device.request(sender, register_properties(), b"{}", "corr-1")
    assert isinstance(reply, Message)
    await device.wire.close()


async def test_oversized_message_closes_the_connection_and_stores_nothing(
    world: World, pki: Any
) -> None:
    running = await start_servers(world, pki, AmqpLimits(max_message_bytes=2048))
    try:
        await world.add_individual("dev-1")
        device = await sas_device(running, world)
        sender, _receiver = device.client.open_links(ADDRESS)
        await device.until(lambda: sender.credit > 0)
        big = json.dumps({"registrationId": "dev-1", "payload": "x" * 10_000}).encode()
        device.client.send(sender, Message(body=big, inferred=True), "big")

        await device.until(lambda: device.client.closed_by_server)

        condition = device.client.connection.remote_condition
        assert condition is not None and condition.name == "amqp:link:message-size-exceeded"
        assert await world.store.get_registration_state(world.instance.id, "dev-1") is None
        await device.wire.close()
    finally:
        for server in (running.amqp, running.https):
            server.close()
            server.abort_all()
        await running.runner.cleanup()


async def test_silent_client_is_disconnected_after_the_open_timeout(world: World, pki: Any) -> None:
    running = await start_servers(world, pki, AmqpLimits(open_timeout_seconds=0.2))
    try:
        wire = await open_tls(running)
        async with asyncio.timeout(5):
            assert await wire.receive() == b""
        await wire.close()
    finally:
        for server in (running.amqp, running.https):
            server.close()
            server.abort_all()
        await running.runner.cleanup()


async def test_registration_over_websockets_uses_the_same_connection_code(
    servers: Servers, world: World
) -> None:
    await world.add_individual("dev-1")
    token = world.credential("dev-1").token
    device = Device(await open_websocket(servers), ProtonClient(user=ADDRESS, password=token))
    sender, _receiver = device.client.open_links(ADDRESS)
    await device.until(lambda: sender.credit > 0)

    reply = await device.request(sender, register_properties(), b"{}", "corr-ws")

    assert isinstance(reply, Message) and reply.correlation_id == "corr-ws"
    assert json_body(reply)["status"] == "assigned"
    await device.wire.close()
