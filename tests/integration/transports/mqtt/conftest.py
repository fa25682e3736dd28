"""Fixtures for MQTT over real TLS on 127.0.0.1 port 0: a real SQLite store, the real engine,
the adapter behind `start_tls_server` (and behind the WebSocket route), and our own client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from tests import pki as test_pki
from tests.integration.engine.world import ID_SCOPE, World
from tests.unit.engine.manual_clock import ManualClock

from opendps.app import tasks
from opendps.model.hub import AllocationPolicy
from opendps.model.instance import Instance
from opendps.simulator.api import DeviceParams
from opendps.store.sqlite import open_sqlite_store
from opendps.tls.contexts import build_server_context
from opendps.tls.server import TlsServer, start_tls_server
from opendps.transports.mqtt.adapter import MqttSettings, mqtt_protocol_factory
from opendps.transports.mqtt.websocket import MQTT_SUBPROTOCOL, mqtt_websocket_handler
from opendps.transports.websocket import add_websocket_route

LOOPBACK = "127.0.0.1"
START = datetime(2026, 1, 1, tzinfo=UTC)


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
    mqtt: TlsServer
    https: TlsServer
    pki: Any

    @property
    def mqtt_port(self) -> int:
        return self.mqtt.ports[0]

    @property
    def https_port(self) -> int:
        return self.https.ports[0]

    def params(self, registration_id: str, token: str | None, **changes: Any) -> DeviceParams:
        values: dict[str, Any] = {
            "host": "localhost",
            "port": self.mqtt_port,
            "id_scope": ID_SCOPE,
            "registration_id": registration_id,
            "sas_token": token,
            "certificate": None,
            "key": None,
            "payload": None,
            "ca_file": self.pki.server_ca_path,
        }
        values.update(changes)
        return DeviceParams(**values)


async def start_servers(world: World, pki: Any, settings: MqttSettings) -> Servers:
    context = build_server_context(pki.server_cert_path, pki.server_key_path)
    mqtt = await start_tls_server(
        mqtt_protocol_factory(world.engine, spawn=tasks.spawn, settings=settings),
        host=LOOPBACK,
        port=0,
        context=context,
    )
    app = web.Application()
    add_websocket_route(
        app, {MQTT_SUBPROTOCOL: mqtt_websocket_handler(world.engine, spawn=tasks.spawn)}
    )
    runner = web.AppRunner(app)
    await runner.setup()
    assert runner.server is not None
    https = await start_tls_server(runner.server, host=LOOPBACK, port=0, context=context)
    https.runner = runner  # type: ignore[attr-defined]
    return Servers(mqtt, https, pki)


async def stop_servers(servers: Servers) -> None:
    for server in (servers.mqtt, servers.https):
        server.close()
        server.abort_all()
        await asyncio.wait_for(server.wait_closed(), 5)
    await servers.https.runner.cleanup()  # type: ignore[attr-defined]


@pytest.fixture
async def servers(world: World, pki: Any) -> AsyncIterator[Servers]:
    running = await start_servers(world, pki, MqttSettings())
    try:
        yield running
    finally:
        await stop_servers(running)


async def open_tls(
    servers: Servers, port: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = test_pki.client_context(servers.pki)
    return await asyncio.open_connection(
        LOOPBACK, port or servers.mqtt_port, ssl=context, server_hostname="localhost"
    )
