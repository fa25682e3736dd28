"""AMQP over real TLS (and WebSockets) on 127.0.0.1 port 0: a real SQLite store, the real
engine, the adapter behind `start_tls_server` and the WebSocket route, and proton's own engine
as the client (tests/unit/transports/amqp/pair.py) pumped over the socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from proton import Message
from tests import pki as test_pki
from tests.integration.engine.world import ID_SCOPE, World
from tests.unit.engine.manual_clock import ManualClock
from tests.unit.transports.amqp.pair import ProtonClient

from opendps.app import tasks
from opendps.model.hub import AllocationPolicy
from opendps.model.instance import Instance
from opendps.store.sqlite import open_sqlite_store
from opendps.tls.contexts import build_server_context
from opendps.tls.server import TlsServer, start_tls_server
from opendps.transports.amqp.adapter import amqp_protocol_factory
from opendps.transports.amqp.driver import AmqpLimits
from opendps.transports.amqp.websocket import AMQP_SUBPROTOCOL, amqp_websocket_handler
from opendps.transports.http.routes import add_device_routes
from opendps.transports.websocket import add_websocket_route

LOOPBACK = "127.0.0.1"
START = datetime(2026, 1, 1, tzinfo=UTC)
STEP_TIMEOUT = 5.0


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return test_pki.build_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await open_sqlite_store(tmp_path / "opendps.db")
    instance = Instance(
        id="inst-1",
        name="default",
        id_scope=ID_SCOPE,
        service_host_name="dps.example.net",
        allocation_policy=AllocationPolicy.HASHED,
        custom_allocation=None,
        etag='"i1"',
        created_at=START,
        updated_at=START,
    )
    try:
        world = World(store, ManualClock(START), await store.create_instance(instance, [], []))
        await world.add_hub("hub1.example.net")
        yield world
        await world.settle()
    finally:
        await store.close()


@dataclass
class Servers:
    amqp: TlsServer
    https: TlsServer
    runner: web.AppRunner
    pki: Any

    @property
    def amqp_port(self) -> int:
        return self.amqp.ports[0]

    @property
    def https_port(self) -> int:
        return self.https.ports[0]


async def start_servers(world: World, pki: Any, limits: AmqpLimits) -> Servers:
    context = build_server_context(pki.server_cert_path, pki.server_key_path)
    amqp = await start_tls_server(
        amqp_protocol_factory(world.engine, spawn=tasks.spawn, limits=limits),
        host=LOOPBACK,
        port=0,
        context=context,
    )
    app = web.Application()
    add_device_routes(app, world.engine)  # HTTPS devices too, for the simulator's TPM flows
    add_websocket_route(
        app, {AMQP_SUBPROTOCOL: amqp_websocket_handler(world.engine, spawn=tasks.spawn)}
    )
    runner = web.AppRunner(app)
    await runner.setup()
    assert runner.server is not None
    https = await start_tls_server(runner.server, host=LOOPBACK, port=0, context=context)
    return Servers(amqp, https, runner, pki)


@pytest.fixture
async def servers(world: World, pki: Any) -> AsyncIterator[Servers]:
    running = await start_servers(world, pki, AmqpLimits())
    try:
        yield running
    finally:
        for server in (running.amqp, running.https):
            server.close()
            server.abort_all()
            await asyncio.wait_for(server.wait_closed(), 5)
        await running.runner.cleanup()


class Wire:
    """A byte pipe to the server: TLS stream or WebSocket."""

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def receive(self) -> bytes:
        """Bytes from the server; b"" once it closed the connection."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class TlsWire(Wire):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> bytes:
        try:
            return await self.reader.read(65536)
        except (ConnectionError, OSError):
            return b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


class WebSocketWire(Wire):
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session, self.ws = session, ws

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def receive(self) -> bytes:
        message = await self.ws.receive()
        return message.data if message.type is aiohttp.WSMsgType.BINARY else b""

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def open_tls(servers: Servers, identity: Any = None) -> TlsWire:
    context = test_pki.client_context(servers.pki, identity=identity)
    reader, writer = await asyncio.open_connection(
        LOOPBACK, servers.amqp_port, ssl=context, server_hostname="localhost"
    )
    return TlsWire(reader, writer)


async def open_websocket(servers: Servers) -> WebSocketWire:
    context = test_pki.client_context(servers.pki)
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(
        f"wss://localhost:{servers.https_port}/$iothub/websocket",
        protocols=("AMQPWSB10",),
        ssl=context,
    )
    assert ws.protocol == "AMQPWSB10"
    return WebSocketWire(session, ws)


class Device:
    """A proton client over a Wire, driven step by step until a condition holds."""

    def __init__(self, wire: Wire, client: ProtonClient) -> None:
        self.wire, self.client = wire, client
        self.server_closed = False

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                out = self.client.drain()
                if out:
                    await self.wire.send(out)
                if done():
                    return
                data = await self.wire.receive()
                if not data:
                    self.server_closed = True
                    self.client.feed(b"")
                    if not done():
                        raise ConnectionError("the server closed the connection")
                    return
                self.client.feed(data)

    async def request(
        self, sender: Any, properties: dict[str, Any], body: Any, correlation_id: str
    ) -> Message | tuple[Any, Any]:
        """Send one request; the reply message, or the (state, condition) of its rejection."""
        message = Message(body=body, properties=properties, correlation_id=correlation_id)
        if isinstance(body, bytes):
            message.inferred = True
        self.client.send(sender, message, correlation_id)
        replies_before = len(self.client.received)

        def answered() -> bool:
            outcome = self.client.outcomes.get(correlation_id)
            return outcome is not None and (
                outcome[1] is not None or len(self.client.received) > replies_before
            )

        await self.until(answered)
        state, condition = self.client.outcomes[correlation_id]
        if condition is not None:
            return state, condition
        return self.client.received[-1]


def register_properties() -> dict[str, Any]:
    return {"iotdps-operation-type": "iotdps-register", "iotdps-forceRegistration": False}


def json_body(message: Message) -> Any:
    assert message.inferred, "replies must be a data section"
    body = message.body
    assert isinstance(body, bytes | memoryview)
    return json.loads(bytes(body))
