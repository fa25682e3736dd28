"""The MQTT adapter over real TLS on loopback, the real engine on a real SQLite store, driven
by our own client (simulator/mqtt.py) and by raw packets where the test needs the bytes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tests.integration.engine.world import ID_SCOPE, World

from opendps.simulator.mqtt import register_mqtt
from opendps.transports.mqtt.adapter import MqttSettings
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
from opendps.transports.mqtt.topics import RESPONSE_FILTER

from .conftest import Servers, open_tls, start_servers, stop_servers

pytestmark = pytest.mark.asyncio


class RawClient:
    """Packets over a real TLS connection, for tests that need exact bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = bytearray()

    async def send(self, *packets: Packet) -> None:
        self.writer.write(b"".join(encode_packet(p) for p in packets))
        await self.writer.drain()

    async def receive(self, within: float = 5) -> Packet:
        async with asyncio.timeout(within):
            while (decoded := decode_packet(self.buffer)) is None:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionResetError("closed")
                self.buffer += data
        packet, used = decoded
        del self.buffer[:used]
        return packet

    async def closed(self, within: float = 5) -> bool:
        async with asyncio.timeout(within):
            while data := await self.reader.read(65536):
                self.buffer += data
        return True

    def close(self) -> None:
        self.writer.close()


async def raw(servers: Servers) -> RawClient:
    return RawClient(*await open_tls(servers))


def connect_packet(world: World, rid: str, **changes: Any) -> Connect:
    values: dict[str, Any] = {
        "client_id": rid,
        "keep_alive": 60,
        "clean_session": False,
        "username": f"{ID_SCOPE}/registrations/{rid}/api-version=2019-03-31&ClientVersion=x",
        "password": world.credential(rid).token.encode(),
    }
    values.update(changes)
    return Connect(**values)


async def connected(servers: Servers, world: World, rid: str) -> RawClient:
    client = await raw(servers)
    await client.send(connect_packet(world, rid), Subscribe(1, ((RESPONSE_FILTER, 1),)))
    assert await client.receive() == Connack(ConnackCode.ACCEPTED)
    assert await client.receive() == Suback(1, (1,))
    return client


async def test_simulator_registers_an_individual_enrollment_over_tls(
    servers: Servers, world: World
) -> None:
    await world.add_individual("dev-1")

    outcome = await register_mqtt(
        servers.params("dev-1", world.credential("dev-1").token), websocket=False
    )

    assert outcome.assigned and outcome.status_code == 200
    assert outcome.body["registrationState"]["assignedHub"] == "hub1.example.net"


async def test_simulator_registers_over_the_websocket_route(servers: Servers, world: World) -> None:
    await world.add_individual("dev-ws")
    params = servers.params("dev-ws", world.credential("dev-ws").token, port=servers.https_port)

    outcome = await register_mqtt(params, websocket=True)

    assert outcome.assigned, outcome.body


async def test_group_member_registers_with_a_derived_key(servers: Servers, world: World) -> None:
    await world.add_group("grp")

    token = world.group_credential("member-1").token
    outcome = await register_mqtt(servers.params("member-1", token), websocket=False)

    assert outcome.assigned
    assert outcome.body["registrationState"]["symmetricKey"] == {"enrollmentGroupId": "grp"}


async def test_wrong_key_is_answered_401_with_the_dps_error_body(
    servers: Servers, world: World
) -> None:
    await world.add_individual("dev-wrong")
    token = world.credential("dev-wrong", "AAAA" * 10 + "AAA=").token

    outcome = await register_mqtt(servers.params("dev-wrong", token), websocket=False)

    assert outcome.status_code == 401 and outcome.body["errorCode"] == 401002
    assert set(outcome.body) == {"errorCode", "trackingId", "message", "timestampUtc", "info"}


async def test_register_answer_echoes_rid_and_is_qos1_json(servers: Servers, world: World) -> None:
    await world.add_individual("dev-rid")
    client = await connected(servers, world, "dev-rid")
    rid = "6f1e%2Dabc"

    await client.send(
        Publish(
            f"$dps/registrations/PUT/iotdps-register/?$rid={rid}",
            b'{"payload": null, "registrationId": "dev-rid"}',
            qos=1,
            packet_id=7,
        )
    )

    assert await client.receive() == Puback(7)
    answer = await client.receive()
    assert isinstance(answer, Publish) and answer.qos == 1
    assert answer.topic == f"$dps/registrations/res/200/?$rid={rid}"
    assert answer.topic.count("$") == 2
    assert json.loads(answer.payload)["status"] == "assigned"
    assert answer.packet_id is not None
    await client.send(Puback(answer.packet_id), Disconnect())
    assert await client.closed()


async def test_unknown_topic_is_answered_400_with_json_and_empty_rid(
    servers: Servers, world: World
) -> None:
    client = await connected(servers, world, "dev-topic")

    await client.send(Publish("devices/x/messages/events/", b"{}"))

    answer = await client.receive()
    assert isinstance(answer, Publish)
    assert answer.topic == "$dps/registrations/res/400/?$rid="
    assert json.loads(answer.payload)["errorCode"] == 400000
    client.close()


async def test_unsubscribe_and_ping_are_answered(servers: Servers, world: World) -> None:
    client = await connected(servers, world, "dev-unsub")

    await client.send(Pingreq(), Unsubscribe(2, (RESPONSE_FILTER,)))

    assert await client.receive() == Pingresp()
    assert await client.receive() == Unsuback(2)
    client.close()


async def test_client_id_differing_from_the_user_name_is_refused_with_connack_2(
    servers: Servers, world: World
) -> None:
    client = await raw(servers)

    await client.send(connect_packet(world, "dev-a", client_id="dev-b"))

    assert await client.receive() == Connack(ConnackCode.IDENTIFIER_REJECTED)
    assert await client.closed()


async def test_malformed_user_name_is_refused_with_connack_4(
    servers: Servers, world: World
) -> None:
    client = await raw(servers)

    await client.send(connect_packet(world, "dev-a", username="not-a-dps-user-name"))

    assert await client.receive() == Connack(ConnackCode.BAD_USERNAME_OR_PASSWORD)
    assert await client.closed()


async def test_wrong_protocol_level_gets_connack_1_and_a_close(servers: Servers) -> None:
    client = await raw(servers)
    # MQTT 5 CONNECT (level 5) with an empty properties block.
    client.writer.write(bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([5, 2, 0, 60, 0, 0, 0]))

    assert await client.receive() == Connack(ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION)
    assert await client.closed()


async def test_garbage_closes_the_connection_and_the_server_keeps_serving(
    servers: Servers, world: World
) -> None:
    client = await raw(servers)
    client.writer.write(b"\xff\xff\xff\xff\xff garbage")

    assert await client.closed()
    await world.add_individual("dev-after")
    outcome = await register_mqtt(
        servers.params("dev-after", world.credential("dev-after").token), websocket=False
    )
    assert outcome.assigned


async def test_oversize_packet_is_closed_before_its_body_arrives(world: World, pki: Any) -> None:
    servers = await start_servers(world, pki, MqttSettings(max_packet_bytes=2048))
    try:
        client = await connected(servers, world, "dev-big")
        # Only the fixed header of a 1 MiB publish: the server refuses without waiting.
        client.writer.write(bytes([0x30]) + bytes([0x80, 0x80, 0x40]))

        assert await client.closed()
    finally:
        await stop_servers(servers)


async def test_silent_client_is_disconnected_after_one_and_a_half_keep_alives(
    servers: Servers, world: World
) -> None:
    client = await raw(servers)
    await client.send(connect_packet(world, "dev-idle", keep_alive=1))
    assert await client.receive() == Connack(ConnackCode.ACCEPTED)
    started = asyncio.get_running_loop().time()

    assert await client.closed(within=5)

    assert 1.4 <= asyncio.get_running_loop().time() - started < 3


async def test_client_without_connect_is_disconnected_after_the_connect_timeout(
    world: World, pki: Any
) -> None:
    servers = await start_servers(world, pki, MqttSettings(connect_timeout_seconds=0.3))
    try:
        client = await raw(servers)
        assert await client.closed(within=3)
    finally:
        await stop_servers(servers)


async def test_simulator_reports_a_connack_refusal_without_raising(
    servers: Servers, world: World
) -> None:
    params = servers.params("dev-x", world.credential("dev-x").token, id_scope="not/a/scope")

    outcome = await register_mqtt(params, websocket=False)

    assert outcome.status_code is None and not outcome.assigned
    assert "CONNACK" in outcome.body["message"]


async def test_simulator_reports_an_unreachable_server_without_raising(
    servers: Servers, world: World
) -> None:
    params = servers.params("dev-y", "token")
    servers.mqtt.close()
    await servers.mqtt.wait_closed()

    outcome = await register_mqtt(params, websocket=False)

    assert outcome.status_code is None and "cannot reach" in outcome.body["message"]
