from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from tests.integration.engine.world import ID_SCOPE, World
from tests.unit.engine.manual_clock import ManualClock

from opendps.engine.api import (
    DeviceStatusRequest,
    OperationStatus,
    OperationStatusRequest,
    RegisterRequest,
    RegistrationResult,
    TpmChallengeRequest,
    TpmTokenCheck,
)
from opendps.model.hub import AllocationPolicy
from opendps.model.instance import Instance
from opendps.store.interface import Store
from opendps.store.sqlite import open_sqlite_store
from opendps.transports.http.routes import add_device_routes

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def world(tmp_path) -> AsyncIterator[World]:  # type: ignore[no-untyped-def]
    store: Store = await open_sqlite_store(tmp_path / "opendps.db")
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
        yield World(store, ManualClock(START), await store.create_instance(instance, [], []))
    finally:
        await store.close()


class Device:
    """HTTP client for the device API, bound to whatever engine the world currently uses."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._client: TestClient[web.Request, web.Application] | None = None

    async def start(self) -> TestClient[web.Request, web.Application]:
        app = web.Application()
        add_device_routes(app, _Forward(self.world))
        self._client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await self._client.start_server()
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class _Forward:
    """A DeviceEngine that forwards to the world's current engine, so a test can swap it
    (settings, webhook) after the app is built."""

    def __init__(self, world: World) -> None:
        self._world = world

    async def register(self, request: RegisterRequest) -> OperationStatus:
        return await self._world.engine.register(request)

    async def operation_status(self, request: OperationStatusRequest) -> OperationStatus:
        return await self._world.engine.operation_status(request)

    async def registration_status(self, request: DeviceStatusRequest) -> RegistrationResult:
        return await self._world.engine.registration_status(request)

    async def tpm_challenge(self, request: TpmChallengeRequest) -> bytes:
        return await self._world.engine.tpm_challenge(request)

    async def check_tpm_token(self, request: TpmTokenCheck) -> None:
        await self._world.engine.check_tpm_token(request)


@pytest.fixture
async def client(world: World) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    device = Device(world)
    try:
        yield await device.start()
    finally:
        await world.settle()
        await device.close()
