"""The hub connector interface: how the engine creates, reads and removes devices on a hub.

A connector is bound to one linked hub (`LinkedHub` carries its host name and connection
settings); `HubConnectors` makes the right one for a hub's kind. Connectors: built-in (our own
store, builtin.py), and later Azure IoT Hub, Mosquitto, webhook.

Every method is idempotent, so the engine may retry a registration that failed half-way: a
second `register_device` with the same identity converges on the same device, a second
`delete_device` reports False.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from opendps.model.device import DeviceAuthKind, HubDevice
from opendps.model.hub import HubKind, LinkedHub
from opendps.model.json import JsonObject


class HubError(Exception):
    """A hub refused or failed an operation. The message is safe to log (no credentials).

    `unauthorized` marks a refusal of OpenDPS's own credentials (a registration then fails
    with 400209, as Azure's "DPS not authorised on the target hub").
    """

    def __init__(self, message: str, *, unauthorized: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unauthorized = unauthorized


@dataclass(frozen=True, slots=True)
class InitialTwin:
    """The twin a device starts with: tags and desired properties."""

    tags: JsonObject = field(default_factory=dict)
    desired: JsonObject = field(default_factory=dict)

    @classmethod
    def from_json(cls, twin: JsonObject | None) -> InitialTwin:
        """From the enrollment/webhook shape `{"tags": {…}, "properties": {"desired": {…}}}`.

        Keys starting with `$` (`$metadata`, `$version`) belong to the hub that wrote them and
        are not copied; anything that is not an object counts as empty.
        """
        if not isinstance(twin, dict):
            return cls()
        properties = twin.get("properties")
        desired = properties.get("desired") if isinstance(properties, dict) else None
        return cls(_collection(twin.get("tags")), _collection(desired))


def _collection(value: object) -> JsonObject:
    if not isinstance(value, dict):
        return {}
    return {name: item for name, item in value.items() if not str(name).startswith("$")}


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What to create on the hub: the device ID, how it authenticates, and its capabilities."""

    device_id: str
    auth_kind: DeviceAuthKind
    # sas: {"primaryKey", "secondaryKey"}; selfSigned: {"primaryThumbprint", "secondaryThumbprint"}.
    auth: JsonObject
    iot_edge: bool = False


@dataclass(frozen=True, slots=True)
class Twin:
    """A device twin as read from a hub."""

    device_id: str
    tags: JsonObject
    desired: JsonObject
    reported: JsonObject
    desired_version: int
    reported_version: int

    def as_initial(self) -> InitialTwin:
        """What migration copies to the new hub: tags and desired properties. Reported
        properties belong to the device, which reports them again on its new hub."""
        return InitialTwin(dict(self.tags), dict(self.desired))


class HubConnector(Protocol):
    """One linked hub, as the engine uses it."""

    @property
    def host_name(self) -> str: ...

    @property
    def is_local(self) -> bool:
        """True when calls touch only OpenDPS's own store, so a registration on this hub can
        complete within the device's request; False for hubs reached over the network."""
        ...

    async def register_device(
        self, identity: DeviceIdentity, twin: InitialTwin, *, replace_twin: bool
    ) -> HubDevice:
        """Create the device, or update its authentication and capabilities if it exists.

        A new device gets `twin`; an existing one gets `twin` only if `replace_twin`, else
        keeps its own. Returns the device as now stored. Raises HubError.
        """
        ...

    async def get_device(self, device_id: str) -> HubDevice | None:
        """The device, or None if the hub has no such device. Raises HubError."""
        ...

    async def get_twin(self, device_id: str) -> Twin | None:
        """The device's twin, or None if the hub has no such device. Raises HubError."""
        ...

    async def delete_device(self, device_id: str) -> bool:
        """Remove the device. False if it did not exist. Raises HubError."""
        ...


# Builds the connector of one linked hub (one per hub kind, registered by app.wiring).
ConnectorFactory = Callable[[LinkedHub], HubConnector]


class HubConnectors:
    """Finds the connector for a linked hub by its kind."""

    def __init__(self, factories: Mapping[HubKind, ConnectorFactory]) -> None:
        self._factories = dict(factories)

    def for_hub(self, hub: LinkedHub) -> HubConnector:
        """Raises HubError when no connector for the hub's kind is configured."""
        factory = self._factories.get(hub.kind)
        if factory is None:
            raise HubError(f"No connector for {hub.kind} hubs is configured ({hub.host_name}).")
        return factory(hub)
