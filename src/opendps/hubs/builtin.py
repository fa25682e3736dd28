"""The built-in hub: a device registry kept in OpenDPS's own store.

For installs without an IoT hub of their own (development, tests, systems that only need the
provisioning record). Devices are `HubDevice` rows keyed by (hub host name, device ID); twin
versions count changes of the desired properties, as a hub's `$version` does.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Protocol

from opendps.hubs.interface import ConnectorFactory, DeviceIdentity, HubConnector, InitialTwin, Twin
from opendps.model.device import HubDevice
from opendps.model.hub import LinkedHub


# Structural views of what the built-in hub uses. Hubs may import neither the engine (above)
# nor the store (a sibling layer); `Store`, `engine.ports.Clock` and `IdGenerator` satisfy these.
class HubDeviceStore(Protocol):
    async def put_hub_device(self, device: HubDevice) -> HubDevice: ...

    async def create_hub_device(self, device: HubDevice) -> HubDevice | None: ...

    async def get_hub_device(self, hub_host_name: str, device_id: str) -> HubDevice | None: ...

    async def delete_hub_device(self, hub_host_name: str, device_id: str) -> bool: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class IdGenerator(Protocol):
    def new_etag(self) -> str: ...


class BuiltinHubConnector:
    """`HubConnector` over the store's hub device methods (HubDeviceStore)."""

    is_local = True

    def __init__(
        self, store: HubDeviceStore, clock: Clock, ids: IdGenerator, hub: LinkedHub
    ) -> None:
        self._store = store
        self._clock = clock
        self._ids = ids
        self._hub = hub

    @property
    def host_name(self) -> str:
        return self._hub.host_name

    async def register_device(
        self, identity: DeviceIdentity, twin: InitialTwin, *, replace_twin: bool
    ) -> HubDevice:
        now = self._clock.now()
        new = HubDevice(
            hub_host_name=self._hub.host_name,
            device_id=identity.device_id,
            instance_id=self._hub.instance_id,
            auth_kind=identity.auth_kind,
            auth=dict(identity.auth),
            iot_edge=identity.iot_edge,
            tags=dict(twin.tags),
            desired=dict(twin.desired),
            etag=self._ids.new_etag(),
            created_at=now,
            updated_at=now,
        )
        # Create first: a new device (the common case under load) costs one batched write and
        # no read. A device that exists costs that insert (it writes nothing) plus the read.
        created = await self._store.create_hub_device(new)
        if created is not None:
            return created
        existing = await self._store.get_hub_device(self._hub.host_name, identity.device_id)
        if existing is None:  # deleted since the insert found it: create it after all
            return await self._store.put_hub_device(new)
        updated = replace(
            existing,
            auth_kind=identity.auth_kind,
            auth=dict(identity.auth),
            iot_edge=identity.iot_edge,
        )
        if replace_twin:
            updated = replace(
                updated,
                tags=dict(twin.tags),
                desired=dict(twin.desired),
                desired_version=existing.desired_version + (existing.desired != twin.desired),
            )
        if updated == existing:
            return existing  # nothing changed: a repeated registration writes nothing
        return await self._store.put_hub_device(replace(updated, etag=new.etag, updated_at=now))

    async def get_device(self, device_id: str) -> HubDevice | None:
        return await self._store.get_hub_device(self._hub.host_name, device_id)

    async def get_twin(self, device_id: str) -> Twin | None:
        device = await self._store.get_hub_device(self._hub.host_name, device_id)
        if device is None:
            return None
        return Twin(
            device_id=device.device_id,
            tags=dict(device.tags),
            desired=dict(device.desired),
            reported=dict(device.reported),
            desired_version=device.desired_version,
            reported_version=device.reported_version,
        )

    async def delete_device(self, device_id: str) -> bool:
        return await self._store.delete_hub_device(self._hub.host_name, device_id)


def builtin_connector_factory(
    store: HubDeviceStore, clock: Clock, ids: IdGenerator
) -> ConnectorFactory:
    """The factory app.wiring registers for `HubKind.BUILTIN`."""

    def make(hub: LinkedHub) -> HubConnector:
        return BuiltinHubConnector(store, clock, ids, hub)

    return make
