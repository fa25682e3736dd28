"""TPM attestation inside AMQP SASL (protocol.md §4.4) through the real TLS front door and the
adapter, with a recording `DeviceEngine`: the point is which engine calls the SASL exchange
makes and how their answers and errors reach the device. The device speaks the TPM frames by
hand (proton's SASL client has no TPM mechanism), then proton's engine takes over for AMQP."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from proton import Message
from tests import pki as test_pki
from tests.unit.transports.amqp.pair import ProtonClient
from tests.unit.transports.amqp.sasl_frames import (
    BLOB,
    ENDORSEMENT_KEY,
    ID_SCOPE,
    REGISTRATION_ID,
    STORAGE_ROOT_KEY,
    TOKEN,
    ServerFrame,
    ServerFrames,
    response,
    tpm_init,
)

from opendps.app import tasks
from opendps.engine.api import (
    DeviceStatusRequest,
    OperationStatus,
    OperationStatusRequest,
    RegisterRequest,
    RegistrationResult,
    SasCredential,
    TpmChallengeRequest,
    TpmTokenCheck,
)
from opendps.model.errors import INVALID_BODY, THROTTLED, UNAUTHORIZED, DpsError
from opendps.model.registration import RegistrationStatus
from opendps.tls.contexts import build_server_context
from opendps.tls.server import start_tls_server
from opendps.transports.amqp.adapter import amqp_protocol_factory
from opendps.transports.amqp.driver import AmqpLimits
from opendps.transports.amqp.sasl import SASL_HEADER, SaslCode

from .conftest import LOOPBACK, Device, TlsWire, json_body, register_properties

ADDRESS = f"{ID_SCOPE}/registrations/{REGISTRATION_ID}"


class TpmEngine:
    """Records every call; answers the challenge with `blob` (or raises it) and checks tokens
    with `token_error` (None: accepted). `hold` keeps the challenge waiting until it is set."""

    def __init__(
        self,
        blob: bytes | Exception = BLOB,
        token_error: Exception | None = None,
        hold: asyncio.Event | None = None,
    ) -> None:
        self.blob, self.token_error, self.hold = blob, token_error, hold
        self.requests: list[Any] = []

    async def tpm_challenge(self, request: TpmChallengeRequest) -> bytes:
        self.requests.append(request)
        if self.hold is not None:
            await self.hold.wait()
        if isinstance(self.blob, Exception):
            raise self.blob
        return self.blob

    async def check_tpm_token(self, request: TpmTokenCheck) -> None:
        self.requests.append(request)
        if self.token_error is not None:
            raise self.token_error

    async def register(self, request: RegisterRequest) -> OperationStatus:
        self.requests.append(request)
        return OperationStatus("op-1", RegistrationStatus.ASSIGNED)

    async def operation_status(self, request: OperationStatusRequest) -> OperationStatus:
        raise AssertionError("not used here")

    async def registration_status(self, request: DeviceStatusRequest) -> RegistrationResult:
        raise AssertionError("not an AMQP operation")


@asynccontextmanager
async def connected(
    pki: Any, engine: TpmEngine, limits: AmqpLimits | None = None
) -> AsyncIterator[TlsWire]:
    server = await start_tls_server(
        amqp_protocol_factory(engine, spawn=tasks.spawn, limits=limits),
        host=LOOPBACK,
        port=0,
        context=build_server_context(pki.server_cert_path, pki.server_key_path),
    )
    try:
        reader, writer = await asyncio.open_connection(
            LOOPBACK,
            server.ports[0],
            ssl=test_pki.client_context(pki),
            server_hostname="localhost",
        )
        wire = TlsWire(reader, writer)
        try:
            yield wire
        finally:
            await wire.close()
    finally:
        server.close()
        server.abort_all()
        await asyncio.wait_for(server.wait_closed(), 5)


class TpmDevice:
    """The device side of the TPM SASL exchange, as the Node and C SDKs play it."""

    def __init__(self, wire: TlsWire) -> None:
        self.wire = wire
        self.frames = ServerFrames()
        self.pending: list[ServerFrame] = []
        self.chunks: list[bytes] = []

    async def next_frame(self) -> ServerFrame:
        async with asyncio.timeout(5):
            while not self.pending:
                data = await self.wire.receive()
                if not data:
                    raise ConnectionError("the server closed the connection")
                self.pending += self.frames.feed(data)
        return self.pending.pop(0)

    async def authenticate(self, token: str = TOKEN) -> int:
        """Run the exchange; the sasl-outcome code."""
        await self.wire.send(SASL_HEADER + tpm_init())
        await self.next_frame()  # sasl-mechanisms
        frame = await self.next_frame()
        if frame.descriptor != 0x42:
            return frame.outcome
        assert frame.challenge == b"\x00"
        await self.wire.send(response(b"\x00" + STORAGE_ROOT_KEY))
        while (frame := await self.next_frame()).descriptor == 0x42:
            self.chunks.append(frame.challenge)
            last = frame.challenge[0] & 0xC0 == 0xC0
            await self.wire.send(response(b"\x00" + token.encode() if last else b"\x00"))
        return frame.outcome

    async def closed_by_server(self) -> bool:
        async with asyncio.timeout(5):
            return await self.wire.receive() == b""


async def test_tpm_device_attests_in_sasl_then_registers_with_its_token(pki: Any) -> None:
    engine = TpmEngine()
    async with connected(pki, engine) as wire:
        device = TpmDevice(wire)

        assert await device.authenticate() == SaslCode.OK

        assert [chunk[0] for chunk in device.chunks] == [0x80, 0xC1]
        assert b"".join(chunk[1:] for chunk in device.chunks) == BLOB
        amqp = Device(wire, ProtonClient())  # no SASL header: the exchange above was it
        sender, _receiver = amqp.client.open_links(ADDRESS)
        await amqp.until(lambda: sender.credit > 0)
        body = json.dumps(
            {
                "registrationId": REGISTRATION_ID,
                "tpm": {
                    "endorsementKey": base64.b64encode(ENDORSEMENT_KEY).decode(),
                    "storageRootKey": base64.b64encode(STORAGE_ROOT_KEY).decode(),
                },
            }
        ).encode()
        reply = await amqp.request(sender, register_properties(), body, "corr-1")

    assert isinstance(reply, Message) and json_body(reply)["status"] == "assigned"
    challenge, check, register = engine.requests
    assert challenge == TpmChallengeRequest(
        ID_SCOPE, REGISTRATION_ID, ENDORSEMENT_KEY, STORAGE_ROOT_KEY
    )
    assert check == TpmTokenCheck(ID_SCOPE, REGISTRATION_ID, TOKEN)
    assert isinstance(register, RegisterRequest)
    assert register.credential == SasCredential(TOKEN)
    assert (register.id_scope, register.registration_id) == (ID_SCOPE, REGISTRATION_ID)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (DpsError(UNAUTHORIZED, "Unauthorized."), SaslCode.AUTH),
        (DpsError(INVALID_BODY, "Not an RSA-2048 TPM key."), SaslCode.AUTH),
        (DpsError(THROTTLED, "Throttled.", retry_after=3), SaslCode.SYS_TEMP),
        (RuntimeError("a bug"), SaslCode.SYS),
    ],
)
async def test_a_refused_challenge_ends_sasl_with_the_matching_outcome_and_closes(
    pki: Any, error: Exception, outcome: SaslCode
) -> None:
    engine = TpmEngine(blob=error)
    async with connected(pki, engine) as wire:
        device = TpmDevice(wire)

        assert await device.authenticate() == outcome
        assert await device.closed_by_server()

    assert device.chunks == []
    assert [type(request) for request in engine.requests] == [TpmChallengeRequest]


async def test_a_refused_token_ends_sasl_with_outcome_auth_and_nothing_is_registered(
    pki: Any,
) -> None:
    engine = TpmEngine(token_error=DpsError(UNAUTHORIZED, "Unauthorized."))
    async with connected(pki, engine) as wire:
        device = TpmDevice(wire)

        assert await device.authenticate(token="SharedAccessSignature sig=wrong") == SaslCode.AUTH
        assert await device.closed_by_server()

    assert [type(request) for request in engine.requests] == [TpmChallengeRequest, TpmTokenCheck]


async def test_the_open_timeout_ends_an_exchange_stalled_in_the_engine(pki: Any) -> None:
    hold = asyncio.Event()
    engine = TpmEngine(hold=hold)
    async with connected(pki, engine, AmqpLimits(open_timeout_seconds=0.2)) as wire:
        device = TpmDevice(wire)
        await wire.send(SASL_HEADER + tpm_init())
        await device.next_frame()  # sasl-mechanisms
        assert (await device.next_frame()).challenge == b"\x00"
        await wire.send(response(b"\x00" + STORAGE_ROOT_KEY))

        assert await device.closed_by_server()

        hold.set()  # the engine answers after the connection is gone: nothing may break
        assert await tasks.wait_pending(5)
    assert len(engine.requests) == 1


async def test_the_open_timeout_ends_a_device_that_stalls_mid_exchange(pki: Any) -> None:
    engine = TpmEngine()
    async with connected(pki, engine, AmqpLimits(open_timeout_seconds=0.2)) as wire:
        device = TpmDevice(wire)
        await wire.send(SASL_HEADER + tpm_init())
        await device.next_frame()  # sasl-mechanisms
        await device.next_frame()  # the SRK challenge, never answered

        assert await device.closed_by_server()

    assert engine.requests == []
