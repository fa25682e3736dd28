"""What the adapter hands the engine (the port it talks to): the SAS password, or the TLS
client chain when there is no password (protocol.md §3). A recording `DeviceEngine` stands in
for the engine here because the point is the request the transport builds."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests import pki as test_pki
from tests.integration.engine.world import ID_SCOPE

from opendps.app import tasks
from opendps.engine.api import (
    DeviceStatusRequest,
    OperationStatus,
    OperationStatusRequest,
    RegisterRequest,
    RegistrationResult,
    SasCredential,
    X509Credential,
)
from opendps.model.errors import THROTTLED, DpsError
from opendps.model.registration import RegistrationStatus
from opendps.tls.contexts import build_server_context
from opendps.tls.server import start_tls_server
from opendps.transports.mqtt.adapter import mqtt_protocol_factory
from opendps.transports.mqtt.packets import (
    Connack,
    Connect,
    Packet,
    Publish,
    Suback,
    Subscribe,
    decode_packet,
    encode_packet,
)
from opendps.transports.mqtt.topics import RESPONSE_FILTER

from .conftest import LOOPBACK


class RecordingEngine:
    def __init__(self, answer: OperationStatus | DpsError) -> None:
        self.answer = answer
        self.requests: list[Any] = []

    async def register(self, request: RegisterRequest) -> OperationStatus:
        return self._reply(request)

    async def operation_status(self, request: OperationStatusRequest) -> OperationStatus:
        return self._reply(request)

    async def registration_status(self, request: DeviceStatusRequest) -> RegistrationResult:
        raise AssertionError("not an MQTT operation")

    def _reply(self, request: Any) -> OperationStatus:
        self.requests.append(request)
        if isinstance(self.answer, DpsError):
            raise self.answer
        return self.answer


async def _exchange(
    pki: Any, engine: RecordingEngine, connect: Connect, *publishes: Publish, identity: Any = None
) -> list[Packet]:
    server = await start_tls_server(
        mqtt_protocol_factory(engine, spawn=tasks.spawn),
        host=LOOPBACK,
        port=0,
        context=build_server_context(pki.server_cert_path, pki.server_key_path),
    )
    try:
        reader, writer = await asyncio.open_connection(
            LOOPBACK,
            server.ports[0],
            ssl=test_pki.client_context(pki, identity=identity),
            server_hostname="localhost",
        )
        packets = [connect, Subscribe(1, ((RESPONSE_FILTER, 1),)), *publishes]
        writer.write(b"".join(encode_packet(p) for p in packets))
        received: list[Packet] = []
        buffer = bytearray()
        async with asyncio.timeout(5):
            while len(received) < 2 + len(publishes):
                buffer += await reader.read(65536)
                while (decoded := decode_packet(buffer)) is not None:
                    received.append(decoded[0])
                    del buffer[: decoded[1]]
        writer.close()
        return received
    finally:
        server.close()
        server.abort_all()
        await asyncio.wait_for(server.wait_closed(), 5)


def _connect(rid: str, password: bytes | None) -> Connect:
    return Connect(
        rid, 60, False, f"{ID_SCOPE}/registrations/{rid}/api-version=2019-03-31", password
    )


ASSIGNED = OperationStatus("op-1", RegistrationStatus.ASSIGNED)


async def test_password_becomes_a_sas_credential_and_the_body_is_forwarded(pki: Any) -> None:
    engine = RecordingEngine(ASSIGNED)
    body = b'{"registrationId": "dev-1", "payload": {"a": 1}}'

    await _exchange(
        pki,
        engine,
        _connect("dev-1", b"SharedAccessSignature sr=x"),
        Publish("$dps/registrations/PUT/iotdps-register/?$rid=1", body, 1, 2),
    )

    assert engine.requests == [
        RegisterRequest(
            ID_SCOPE, "dev-1", SasCredential("SharedAccessSignature sr=x"), {"a": 1}, "dev-1"
        )
    ]


async def test_no_password_with_a_client_certificate_becomes_an_x509_credential(pki: Any) -> None:
    identity = test_pki.self_signed("dev-x509")
    engine = RecordingEngine(ASSIGNED)

    await _exchange(
        pki,
        engine,
        _connect("dev-x509", None),
        Publish(
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId=op-1", b" ", 1, 2
        ),
        identity=identity,
    )

    [request] = engine.requests
    assert isinstance(request, OperationStatusRequest) and request.operation_id == "op-1"
    assert isinstance(request.credential, X509Credential)
    assert request.credential.chain == identity.sent_chain()


async def test_engine_error_becomes_its_status_with_integer_retry_after_and_json(pki: Any) -> None:
    engine = RecordingEngine(DpsError(THROTTLED, "Too many requests.", retry_after=3))

    received = await _exchange(
        pki,
        engine,
        _connect("dev-1", b"sas"),
        Publish("$dps/registrations/PUT/iotdps-register/?$rid=r1", b"{}", 0),
    )

    assert isinstance(received[0], Connack) and isinstance(received[1], Suback)
    answer = received[2]
    assert isinstance(answer, Publish)
    assert answer.topic == "$dps/registrations/res/429/?$rid=r1&retry-after=3"
    assert json.loads(answer.payload)["errorCode"] == THROTTLED
