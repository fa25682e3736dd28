"""Devices of a built-in hub: list (paged), show with twin, delete.

Only built-in hubs keep their devices in OpenDPS's store; other kinds (Azure IoT Hub and the
like) hold them themselves and are read with their own tools, so they get 400 here. Device
keys are masked (`***`): they are the device's credentials on the hub.
"""

from __future__ import annotations

from aiohttp import web

from opendps.admin_api.audit import parse_positive_int
from opendps.admin_api.auth import AdminCaller, resolve_instance
from opendps.admin_api.hubs import mask_connection
from opendps.admin_api.schemas import HubDevice as HubDeviceBody
from opendps.admin_api.schemas import HubDevicePage, HubDeviceSummary, HubDeviceTwin
from opendps.admin_api.wire import no_content, respond
from opendps.model.device import DeviceAuthKind, HubDevice
from opendps.model.errors import BAD_REQUEST, HUB_DEVICE_NOT_FOUND, LINKED_HUB_NOT_FOUND, DpsError
from opendps.model.hub import HubKind, LinkedHub
from opendps.service_api.audit import record_change
from opendps.service_api.context import ServiceContext


async def list_devices(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    hub = await _builtin_hub(request, ctx, caller)
    limits = ctx.limits
    limit = (
        parse_positive_int(request.query.get("limit"), "limit", maximum=limits.max_page_size)
        or limits.default_page_size
    )
    after = request.query.get("after") or None
    page = await ctx.store.list_hub_devices(hub.host_name, after=after, limit=limit)
    return respond(
        HubDevicePage(value=[_summary(d) for d in page.items], next_after=page.next_after)
    )


async def show_device(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    hub = await _builtin_hub(request, ctx, caller)
    device = await _device(ctx, hub, request.match_info["device"])
    return respond(render_device(device), etag=device.etag)


async def delete_device(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    hub = await _builtin_hub(request, ctx, caller)
    device = await _device(ctx, hub, request.match_info["device"])
    await ctx.store.delete_hub_device(hub.host_name, device.device_id)
    await record_change(
        ctx,
        hub.instance_id,
        caller.actor,
        "hub-device.delete",
        f"hubs/{hub.host_name}/devices/{device.device_id}",
    )
    return no_content()


def render_device(device: HubDevice) -> HubDeviceBody:
    return HubDeviceBody(
        device_id=device.device_id,
        hub_host_name=device.hub_host_name,
        authentication_kind=str(device.auth_kind),
        authentication=_masked_auth(device),
        iot_edge=device.iot_edge,
        status=device.status,
        twin=HubDeviceTwin(
            tags=dict(device.tags),
            desired=dict(device.desired),
            reported=dict(device.reported),
            desired_version=device.desired_version,
            reported_version=device.reported_version,
        ),
        etag=device.etag,
        created_date_time_utc=device.created_at,
        last_updated_date_time_utc=device.updated_at,
    )


def _masked_auth(device: HubDevice) -> dict[str, str]:
    # Thumbprints identify a certificate and are no secret; SAS keys are the device's password.
    if device.auth_kind is DeviceAuthKind.SAS:
        return mask_connection(device.auth)
    return {name: str(value) for name, value in device.auth.items()}


def _summary(device: HubDevice) -> HubDeviceSummary:
    return HubDeviceSummary(
        device_id=device.device_id,
        authentication_kind=str(device.auth_kind),
        iot_edge=device.iot_edge,
        status=device.status,
        last_updated_date_time_utc=device.updated_at,
    )


async def _builtin_hub(request: web.Request, ctx: ServiceContext, caller: AdminCaller) -> LinkedHub:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    name = request.match_info["hub"]
    hub = await ctx.store.get_linked_hub(instance.id, name.lower())
    if hub is None:
        raise DpsError(LINKED_HUB_NOT_FOUND, f"Hub {name!r} is not linked to this instance.")
    if hub.kind is not HubKind.BUILTIN:
        raise DpsError(
            BAD_REQUEST,
            f"Hub {hub.host_name!r} is a {hub.kind} hub: its devices live on the hub itself; "
            "only built-in hubs list their devices here.",
        )
    return hub


async def _device(ctx: ServiceContext, hub: LinkedHub, device_id: str) -> HubDevice:
    device = await ctx.store.get_hub_device(hub.host_name, device_id)
    if device is None:
        raise DpsError(
            HUB_DEVICE_NOT_FOUND, f"Device {device_id!r} does not exist on hub {hub.host_name!r}."
        )
    return device
