"""The built-in hub connector on a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from tests.unit.engine.manual_clock import ManualClock

from opendps.engine.ports import RandomIdGenerator
from opendps.hubs.builtin import BuiltinHubConnector, builtin_connector_factory
from opendps.hubs.interface import DeviceIdentity, HubConnectors, HubError, InitialTwin
from opendps.model.device import DeviceAuthKind, HubDevice
from opendps.model.hub import AllocationPolicy, HubKind, LinkedHub
from opendps.model.instance import Instance
from opendps.store.interface import Store
from opendps.store.sqlite import open_sqlite_store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HUB = LinkedHub("inst-1", "hub.example.net", HubKind.BUILTIN)
IDENTITY = DeviceIdentity(
    "dev-1", DeviceAuthKind.SAS, {"primaryKey": "cA==", "secondaryKey": "cw=="}, iot_edge=False
)
TWIN = InitialTwin({"site": "a"}, {"rate": 1})


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[Store]:  # type: ignore[no-untyped-def]
    opened = await open_sqlite_store(tmp_path / "hub.db")
    instance = Instance(
        "inst-1",
        "default",
        "0ne00000ABC",
        "dps.example.net",
        AllocationPolicy.HASHED,
        None,
        '"e"',
        T0,
        T0,
    )
    await opened.create_instance(instance, [], [HUB])
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def hub(store: Store, clock: ManualClock) -> BuiltinHubConnector:
    return BuiltinHubConnector(store, clock, RandomIdGenerator(), HUB)


async def test_register_creates_the_device_with_its_twin(hub: BuiltinHubConnector) -> None:
    device = await hub.register_device(IDENTITY, TWIN, replace_twin=False)
    assert (device.device_id, device.hub_host_name, device.instance_id) == (
        "dev-1",
        "hub.example.net",
        "inst-1",
    )
    assert (device.auth_kind, device.auth, device.status) == (
        DeviceAuthKind.SAS,
        IDENTITY.auth,
        "enabled",
    )
    assert (device.tags, device.desired, device.desired_version) == ({"site": "a"}, {"rate": 1}, 1)
    assert await hub.get_device("dev-1") == device
    twin = await hub.get_twin("dev-1")
    assert twin is not None and twin.as_initial() == TWIN


async def test_repeating_a_registration_changes_nothing(
    hub: BuiltinHubConnector, clock: ManualClock
) -> None:
    first = await hub.register_device(IDENTITY, TWIN, replace_twin=True)
    clock.advance(60)
    assert await hub.register_device(IDENTITY, TWIN, replace_twin=True) == first
    assert await hub.register_device(IDENTITY, TWIN, replace_twin=False) == first


async def test_an_existing_twin_is_kept_unless_replaced(hub: BuiltinHubConnector) -> None:
    await hub.register_device(IDENTITY, TWIN, replace_twin=False)
    kept = await hub.register_device(
        IDENTITY, InitialTwin({"site": "b"}, {"rate": 2}), replace_twin=False
    )
    assert (kept.tags, kept.desired) == ({"site": "a"}, {"rate": 1})
    replaced = await hub.register_device(
        IDENTITY, InitialTwin({"site": "b"}, {"rate": 2}), replace_twin=True
    )
    assert (replaced.tags, replaced.desired, replaced.desired_version) == (
        {"site": "b"},
        {"rate": 2},
        2,
    )
    assert replaced.etag != kept.etag


async def test_new_keys_and_capabilities_update_the_device(hub: BuiltinHubConnector) -> None:
    await hub.register_device(IDENTITY, TWIN, replace_twin=False)
    updated = await hub.register_device(
        replace(IDENTITY, auth={"primaryKey": "eA==", "secondaryKey": "eQ=="}, iot_edge=True),
        TWIN,
        replace_twin=False,
    )
    assert updated.auth == {"primaryKey": "eA==", "secondaryKey": "eQ=="} and updated.iot_edge


class _DeletedMeanwhile:
    """A store on which the device existed when the connector tried to create it, and was
    deleted (by an admin, on any node) before the connector read it."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def create_hub_device(self, device: HubDevice) -> HubDevice | None:
        return None

    async def put_hub_device(self, device: HubDevice) -> HubDevice:
        return await self._store.put_hub_device(device)

    async def get_hub_device(self, hub_host_name: str, device_id: str) -> HubDevice | None:
        return await self._store.get_hub_device(hub_host_name, device_id)

    async def delete_hub_device(self, hub_host_name: str, device_id: str) -> bool:
        return await self._store.delete_hub_device(hub_host_name, device_id)


async def test_a_device_deleted_during_its_registration_is_created_after_all(
    store: Store, clock: ManualClock
) -> None:
    hub = BuiltinHubConnector(_DeletedMeanwhile(store), clock, RandomIdGenerator(), HUB)
    device = await hub.register_device(IDENTITY, TWIN, replace_twin=False)
    assert (device.device_id, device.tags, device.desired) == ("dev-1", {"site": "a"}, {"rate": 1})
    assert await store.get_hub_device(HUB.host_name, "dev-1") == device


async def test_delete_reports_whether_the_device_existed(hub: BuiltinHubConnector) -> None:
    await hub.register_device(IDENTITY, TWIN, replace_twin=False)
    assert await hub.delete_device("dev-1")
    assert not await hub.delete_device("dev-1")
    assert await hub.get_device("dev-1") is None and await hub.get_twin("dev-1") is None


async def test_connectors_are_found_by_hub_kind(store: Store, clock: ManualClock) -> None:
    connectors = HubConnectors(
        {HubKind.BUILTIN: builtin_connector_factory(store, clock, RandomIdGenerator())}
    )
    connector = connectors.for_hub(HUB)
    assert connector.host_name == "hub.example.net" and connector.is_local
    with pytest.raises(HubError):
        connectors.for_hub(replace(HUB, kind=HubKind.AZURE))


def test_initial_twin_drops_hub_metadata_and_tolerates_odd_shapes() -> None:
    twin = InitialTwin.from_json(
        {
            "tags": {"a": 1, "$v": 2},
            "properties": {"desired": {"b": 2, "$metadata": {}, "$version": 3}},
        }
    )
    assert twin == InitialTwin({"a": 1}, {"b": 2})
    assert InitialTwin.from_json(None) == InitialTwin()
    assert InitialTwin.from_json({"tags": [], "properties": "x"}) == InitialTwin()
