"""Linked hubs of an instance: the hubs its devices may be assigned to (ARCHITECTURE §1)."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TypeVar

from aiohttp import web

from opendps.admin_api.auth import AdminCaller, resolve_instance
from opendps.admin_api.schemas import Hub, HubCreate, HubList, HubUpdate
from opendps.admin_api.wire import if_match, no_content, read_model, respond
from opendps.model.errors import (
    ALREADY_EXISTS,
    INVALID_ID,
    LINKED_HUB_NOT_FOUND,
    QUOTA_EXCEEDED,
    DpsError,
)
from opendps.model.hub import MAX_LINKED_HUBS, HubKind, LinkedHub
from opendps.service_api.audit import record_change
from opendps.service_api.context import ServiceContext

# Built-in hubs live in OpenDPS's own database; their names only need to be unique, and
# `.localhost` (RFC 6761) can never clash with a real hub on the internet.
BUILTIN_HUB_SUFFIX = ".builtin-hub.localhost"

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens, ≤ 63 each.
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
# Connection settings whose names contain one of these are credentials and are masked.
_SECRET_NAME_PARTS = ("key", "secret", "password", "token", "connectionstring", "sig")
_MASK = "***"

T = TypeVar("T")


def builtin_hub_host_name(instance_name: str) -> str:
    """The built-in hub every new instance gets: `<instance-name>.builtin-hub.localhost`."""
    return instance_name.lower().replace("_", "-") + BUILTIN_HUB_SUFFIX


def parse_host_name(value: str) -> str:
    """A hub host name, lower-cased; raises DpsError(400007) if it is not a DNS host name."""
    host = value.strip().lower()
    if not _HOST_NAME.match(host):
        raise DpsError(
            INVALID_ID, "Hub host name must be a DNS host name (letters, digits, '-', '.')."
        )
    return host


def mask_connection(connection: dict[str, object]) -> dict[str, str]:
    """Connector settings safe to show: every credential replaced by `***`."""
    shown: dict[str, str] = {}
    for name, value in connection.items():
        lowered = name.lower()
        secret = any(part in lowered for part in _SECRET_NAME_PARTS)
        shown[name] = _MASK if secret else str(value)
    return shown


def render_hub(hub: LinkedHub) -> Hub:
    return Hub(
        host_name=hub.host_name,
        kind=hub.kind.value,
        allocation_weight=hub.allocation_weight,
        apply_allocation_policy=hub.apply_allocation_policy,
        location=hub.location,
        connection=mask_connection(hub.connection),
        etag=hub.etag,
        created_date_time_utc=hub.created_at,
        last_updated_date_time_utc=hub.updated_at,
    )


async def list_hubs(request: web.Request, ctx: ServiceContext, caller: AdminCaller) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    hubs = await ctx.store.list_linked_hubs(instance.id)
    return respond(HubList(value=[render_hub(hub) for hub in hubs]))


async def show_hub(request: web.Request, ctx: ServiceContext, caller: AdminCaller) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    hub = await _get_hub(ctx, instance.id, request.match_info["hub"])
    return respond(render_hub(hub), etag=hub.etag)


async def add_hub(request: web.Request, ctx: ServiceContext, caller: AdminCaller) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    body = await read_model(request, ctx, HubCreate)
    host_name = parse_host_name(body.host_name)
    hubs = await ctx.store.list_linked_hubs(instance.id)
    if any(hub.host_name.lower() == host_name for hub in hubs):
        raise DpsError(ALREADY_EXISTS, f"Hub {host_name!r} is already linked to this instance.")
    if len(hubs) >= MAX_LINKED_HUBS:
        raise DpsError(QUOTA_EXCEEDED, f"An instance links at most {MAX_LINKED_HUBS} hubs.")
    await _refuse_builtin_hub_of_another_instance(ctx, host_name)
    now = ctx.clock.now()
    hub = LinkedHub(
        instance_id=instance.id,
        host_name=host_name,
        kind=HubKind(body.kind),
        allocation_weight=body.allocation_weight,
        apply_allocation_policy=body.apply_allocation_policy,
        location=body.location,
        etag=ctx.ids.new_etag(),
        created_at=now,
        updated_at=now,
    )
    stored = await ctx.store.put_linked_hub(hub)
    await record_change(ctx, instance.id, caller.actor, "hub.add", f"hubs/{host_name}")
    return respond(render_hub(stored), status=201, etag=stored.etag)


async def _refuse_builtin_hub_of_another_instance(ctx: ServiceContext, host_name: str) -> None:
    # The built-in registry is keyed by hub host name: two instances linking the same built-in
    # hub would share devices, which tenant isolation forbids (ARCHITECTURE §6).
    for other in await ctx.store.list_instances():
        if await ctx.store.get_linked_hub(other.id, host_name) is not None:
            raise DpsError(ALREADY_EXISTS, f"Hub {host_name!r} is linked to another instance.")


async def update_hub(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    body = await read_model(request, ctx, HubUpdate)
    hub = await _get_hub(ctx, instance.id, request.match_info["hub"])
    updated = replace(
        hub,
        allocation_weight=_given(body.allocation_weight, hub.allocation_weight),
        apply_allocation_policy=_given(body.apply_allocation_policy, hub.apply_allocation_policy),
        # `location: null` clears it; leaving the field out keeps it.
        location=body.location if "location" in body.model_fields_set else hub.location,
        etag=ctx.ids.new_etag(),
        updated_at=ctx.clock.now(),
    )
    stored = await ctx.store.put_linked_hub(updated, if_match=if_match(request))
    await record_change(ctx, instance.id, caller.actor, "hub.update", f"hubs/{hub.host_name}")
    return respond(render_hub(stored), etag=stored.etag)


def _given(value: T | None, current: T) -> T:
    return current if value is None else value


async def delete_hub(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    hub = await _get_hub(ctx, instance.id, request.match_info["hub"])
    await ctx.store.delete_linked_hub(instance.id, hub.host_name)
    await record_change(ctx, instance.id, caller.actor, "hub.delete", f"hubs/{hub.host_name}")
    return no_content()


async def _get_hub(ctx: ServiceContext, instance_id: str, host_name: str) -> LinkedHub:
    hub = await ctx.store.get_linked_hub(instance_id, host_name.lower())
    if hub is None:
        raise DpsError(LINKED_HUB_NOT_FOUND, f"Hub {host_name!r} is not linked to this instance.")
    return hub
