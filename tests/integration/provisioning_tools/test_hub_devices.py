"""`/admin/v1/instances/{instance}/hubs/{hub}/devices`: built-in hub devices over the store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from tests.integration.admin_api.conftest import AdminClient

from opendps.model.device import DeviceAuthKind, HubDevice
from opendps.model.errors import BAD_REQUEST, HUB_DEVICE_NOT_FOUND, LINKED_HUB_NOT_FOUND
from opendps.model.hub import HubKind, LinkedHub

HUB = "default.builtin-hub.localhost"
DEVICES = f"/instances/default/hubs/{HUB}/devices"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRIMARY = "cHJpbWFyeS1kZXZpY2Uta2V5LW5ldmVyLXNob3du"


async def _put_device(admin: AdminClient, device_id: str, **changes: object) -> HubDevice:
    instance = await admin.instance("default")
    device = HubDevice(
        hub_host_name=HUB,
        device_id=device_id,
        instance_id=instance.id,
        auth_kind=DeviceAuthKind.SAS,
        auth={"primaryKey": PRIMARY, "secondaryKey": PRIMARY},
        tags={"site": "lyon"},
        desired={"interval": 5},
        reported={"firmware": "1.2"},
        desired_version=3,
        reported_version=7,
        etag='"d-1"',
        created_at=T0,
        updated_at=T0,
    )
    return await admin.context.store.put_hub_device(replace(device, **changes))  # type: ignore[arg-type]


async def test_a_device_is_shown_with_its_twin_and_versions_and_its_keys_masked(
    admin: AdminClient,
) -> None:
    await _put_device(admin, "sensor-1", iot_edge=True)
    shown = await admin.ok("GET", f"{DEVICES}/sensor-1")
    assert shown["deviceId"] == "sensor-1"
    assert shown["hubHostName"] == HUB
    assert (shown["authenticationKind"], shown["iotEdge"], shown["status"]) == (
        "sas",
        True,
        "enabled",
    )
    assert shown["authentication"] == {"primaryKey": "***", "secondaryKey": "***"}
    assert shown["twin"] == {
        "tags": {"site": "lyon"},
        "desired": {"interval": 5},
        "reported": {"firmware": "1.2"},
        "desiredVersion": 3,
        "reportedVersion": 7,
    }
    assert PRIMARY not in str(shown)


async def test_self_signed_thumbprints_are_shown_since_they_are_not_secrets(
    admin: AdminClient,
) -> None:
    thumbprints = {"primaryThumbprint": "AB" * 20, "secondaryThumbprint": "CD" * 20}
    await _put_device(admin, "cam-1", auth_kind=DeviceAuthKind.SELF_SIGNED, auth=thumbprints)
    shown = await admin.ok("GET", f"{DEVICES}/cam-1")
    assert shown["authentication"] == thumbprints


async def test_devices_are_listed_in_pages(admin: AdminClient) -> None:
    for name in ("a-1", "b-2", "c-3"):
        await _put_device(admin, name)
    first = await admin.ok("GET", DEVICES + "?limit=2")
    assert [d["deviceId"] for d in first["value"]] == ["a-1", "b-2"]
    assert first["nextAfter"]
    second = await admin.ok("GET", f"{DEVICES}?limit=2&after={first['nextAfter']}")
    assert [d["deviceId"] for d in second["value"]] == ["c-3"]
    assert second["nextAfter"] is None
    assert "authentication" not in first["value"][0]


async def test_a_deleted_device_is_gone(admin: AdminClient) -> None:
    await _put_device(admin, "sensor-1")
    await admin.ok("DELETE", f"{DEVICES}/sensor-1", status=204)
    await admin.error("GET", f"{DEVICES}/sensor-1", HUB_DEVICE_NOT_FOUND)
    await admin.error("DELETE", f"{DEVICES}/sensor-1", HUB_DEVICE_NOT_FOUND)
    assert (await admin.ok("GET", DEVICES))["value"] == []


async def test_a_hub_of_another_kind_has_no_devices_here(admin: AdminClient) -> None:
    instance = await admin.instance("default")
    await admin.context.store.put_linked_hub(
        LinkedHub(instance.id, "real.azure-devices.net", HubKind.AZURE, etag='"h"')
    )
    body = await admin.error(
        "GET", "/instances/default/hubs/real.azure-devices.net/devices", BAD_REQUEST
    )
    assert "only built-in hubs" in body["message"]


async def test_a_hub_that_is_not_linked_is_not_found(admin: AdminClient) -> None:
    await admin.error(
        "GET", "/instances/default/hubs/nope.example.net/devices", LINKED_HUB_NOT_FOUND
    )
