"""Instances (tenants): create, list, show, delete, and the instance allocation policy."""

from __future__ import annotations

import uuid
from dataclasses import replace

from aiohttp import web

from opendps.admin_api.auth import AdminCaller, require_deployment_admin, resolve_instance
from opendps.admin_api.hubs import builtin_hub_host_name, parse_host_name, render_hub
from opendps.admin_api.policies import render_policy_with_keys
from opendps.admin_api.schemas import (
    AllocationPolicySaved,
    AllocationPolicySettings,
    CustomAllocationDefinitionBody,
    InstanceCounts,
    InstanceCreate,
    InstanceCreated,
    InstanceDetail,
    InstanceList,
    InstanceSummary,
)
from opendps.admin_api.wire import if_match, no_content, read_model, respond
from opendps.engine.ports import Clock, IdGenerator
from opendps.model.enrollment import CustomAllocationDefinition
from opendps.model.errors import ALREADY_EXISTS, CONFLICT, INVALID_BODY, DpsError
from opendps.model.hub import AllocationPolicy, HubKind, LinkedHub
from opendps.model.ids import generate_id_scope, parse_name
from opendps.model.instance import ALL_RIGHTS, OWNER_POLICY_NAME, AccessPolicy, Instance
from opendps.service_api.audit import record_change
from opendps.service_api.context import ServiceContext
from opendps.service_api.webhook_check import instance_webhook_warning
from opendps.store.interface import Store

# A fresh ID scope has 32 random bits; a clash is rare, three clashes in a row mean a bug.
_ID_SCOPE_ATTEMPTS = 3
# Page size when counting enrollment groups (Azure allows 100 per kind, so usually one page).
_COUNT_PAGE_SIZE = 1000


def default_service_host_name(ctx: ServiceContext, name: str) -> str:
    """`<name>.<first public host>`: the Host header that selects this instance's service API."""
    parent = ctx.public_hosts[0] if ctx.public_hosts else "localhost"
    return f"{name.lower().replace('_', '-')}.{parent}"


def render_summary(instance: Instance) -> InstanceSummary:
    return InstanceSummary(
        name=instance.name,
        id_scope=instance.id_scope,
        service_host_name=instance.service_host_name,
        allocation_policy=instance.allocation_policy,
        created_date_time_utc=instance.created_at,
    )


async def render_detail(ctx: ServiceContext, instance: Instance) -> InstanceDetail:
    hubs = await ctx.store.list_linked_hubs(instance.id)
    counts = InstanceCounts(
        individual_enrollments=await ctx.store.count_individual_enrollments(instance.id),
        enrollment_groups=await _count_enrollment_groups(ctx, instance.id),
        linked_hubs=len(hubs),
        ca_certificates=len(await ctx.store.list_ca_certificates(instance.id)),
        access_policies=len(await ctx.store.list_access_policies(instance.id)),
    )
    return InstanceDetail(
        **render_summary(instance).model_dump(),
        custom_allocation_definition=_render_custom(instance.custom_allocation),
        etag=instance.etag,
        hubs=[render_hub(hub) for hub in hubs],
        counts=counts,
    )


def _render_custom(
    custom: CustomAllocationDefinition | None,
) -> CustomAllocationDefinitionBody | None:
    if custom is None:
        return None
    return CustomAllocationDefinitionBody(
        webhook_url=custom.webhook_url, api_version=custom.api_version
    )


async def _count_enrollment_groups(ctx: ServiceContext, instance_id: str) -> int:
    total, after = 0, None
    while True:
        page = await ctx.store.list_enrollment_groups(
            instance_id, after=after, limit=_COUNT_PAGE_SIZE
        )
        total += len(page.items)
        if page.next_after is None:
            return total
        after = page.next_after


async def list_instances(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instances = await ctx.store.list_instances()
    visible = [i for i in instances if caller.is_deployment_admin or i.id == caller.instance_id]
    return respond(InstanceList(value=[render_summary(i) for i in visible]))


async def show_instance(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    return respond(await render_detail(ctx, instance), etag=instance.etag)


async def create_instance(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    require_deployment_admin(caller)
    body = await read_model(request, ctx, InstanceCreate)
    name = parse_name(body.name, "Instance name")
    if await ctx.store.get_instance_by_name(name) is not None:
        raise DpsError(ALREADY_EXISTS, f"Instance {name!r} already exists.")
    host = parse_host_name(body.service_host_name or default_service_host_name(ctx, name))
    if await ctx.store.get_instance_by_service_host(host) is not None:
        raise DpsError(ALREADY_EXISTS, f"Service host name {host!r} is used by another instance.")
    instance, owner = await create_instance_records(
        ctx.store,
        ctx.clock,
        ctx.ids,
        name=name,
        host=host,
        allocation_policy=body.allocation_policy,
    )
    await record_change(ctx, instance.id, caller.actor, "instance.create", f"instances/{name}")
    detail = await render_detail(ctx, instance)
    created = InstanceCreated(
        **detail.model_dump(), owner_policy=render_policy_with_keys(instance, owner)
    )
    return respond(created, status=201, etag=instance.etag)


async def create_instance_records(
    store: Store,
    clock: Clock,
    ids: IdGenerator,
    *,
    name: str,
    host: str,
    allocation_policy: AllocationPolicy,
) -> tuple[Instance, AccessPolicy]:
    """Create an instance with its owner policy and built-in hub, in one transaction.

    Used by the admin API and by the first start's bootstrap. Raises DpsError(ALREADY_EXISTS)
    when the name is taken (an ID scope clash is retried with a fresh scope).
    """
    instance_id = str(uuid.uuid4())
    now = clock.now()
    owner = AccessPolicy(
        instance_id=instance_id,
        name=OWNER_POLICY_NAME,
        primary_key=ids.new_key(),
        secondary_key=ids.new_key(),
        rights=ALL_RIGHTS,
    )
    hub = LinkedHub(
        instance_id=instance_id,
        host_name=builtin_hub_host_name(name),
        kind=HubKind.BUILTIN,
        etag=ids.new_etag(),
        created_at=now,
        updated_at=now,
    )
    attempts_left = _ID_SCOPE_ATTEMPTS
    while True:
        attempts_left -= 1
        instance = Instance(
            id=instance_id,
            name=name,
            id_scope=generate_id_scope(),
            service_host_name=host,
            allocation_policy=allocation_policy,
            custom_allocation=None,
            etag=ids.new_etag(),
            created_at=now,
            updated_at=now,
        )
        try:
            return await store.create_instance(instance, [owner], [hub]), owner
        except DpsError as err:
            # Retry only an ID scope clash; a name taken meanwhile is the caller's conflict.
            if err.error_code != ALREADY_EXISTS or attempts_left == 0:
                raise
            if await store.get_instance_by_name(name) is not None:
                raise


async def delete_instance(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    require_deployment_admin(caller)
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    if instance.name.lower() == ctx.default_instance_name.lower():
        # `opendps serve` and connection strings without a Host match rely on it.
        raise DpsError(CONFLICT, "The default instance cannot be deleted.")
    await ctx.store.delete_instance(instance.id)
    # Recorded without the instance id: the entry must outlive the instance it names.
    await record_change(ctx, None, caller.actor, "instance.delete", f"instances/{instance.name}")
    return no_content()


async def show_allocation_policy(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    settings = AllocationPolicySettings(
        allocation_policy=instance.allocation_policy,
        custom_allocation_definition=_render_custom(instance.custom_allocation),
    )
    return respond(settings, etag=instance.etag)


async def set_allocation_policy(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    body = await read_model(request, ctx, AllocationPolicySettings)
    custom = _parse_custom(body)
    updated = replace(
        instance,
        allocation_policy=body.allocation_policy,
        custom_allocation=custom,
        etag=ctx.ids.new_etag(),
        updated_at=ctx.clock.now(),
    )
    stored = await ctx.store.update_instance(updated, if_match=if_match(request))
    await record_change(
        ctx, instance.id, caller.actor, "allocation-policy.set", f"instances/{instance.name}"
    )
    # A broken webhook shows now rather than when a device fails; the policy stays saved.
    warning = await instance_webhook_warning(ctx, stored)
    result = AllocationPolicySettings(
        allocation_policy=stored.allocation_policy,
        custom_allocation_definition=_render_custom(stored.custom_allocation),
    )
    if warning is None:  # `warnings` only appears when there is one
        return respond(result, etag=stored.etag)
    saved = AllocationPolicySaved(**result.model_dump(), warnings=[warning])
    return respond(saved, etag=stored.etag)


def _parse_custom(body: AllocationPolicySettings) -> CustomAllocationDefinition | None:
    definition = body.custom_allocation_definition
    if body.allocation_policy is AllocationPolicy.CUSTOM:
        if definition is None:
            raise DpsError(INVALID_BODY, "The custom policy needs a customAllocationDefinition.")
        if not definition.webhook_url.lower().startswith(("https://", "http://")):
            raise DpsError(
                INVALID_BODY, "customAllocationDefinition.webhookUrl must be an HTTP(S) URL."
            )
        return CustomAllocationDefinition(definition.webhook_url, definition.api_version)
    if definition is not None:
        raise DpsError(
            INVALID_BODY, "customAllocationDefinition is only allowed with the custom policy."
        )
    return None
