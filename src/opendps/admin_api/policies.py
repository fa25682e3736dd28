"""Shared access policies of an instance: names, keys and rights (protocol.md §7.4)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace

from aiohttp import web

from opendps.admin_api.auth import AdminCaller, resolve_instance
from opendps.admin_api.schemas import (
    KeyRegeneration,
    PolicyCreate,
    PolicyList,
    PolicySummary,
    PolicyWithKeys,
)
from opendps.admin_api.wire import no_content, read_model, respond
from opendps.model.errors import (
    ACCESS_POLICY_NOT_FOUND,
    ALREADY_EXISTS,
    CONFLICT,
    INVALID_BODY,
    DpsError,
)
from opendps.model.ids import parse_name
from opendps.model.instance import AccessPolicy, Instance, Right, format_rights, parse_rights
from opendps.service_api.audit import record_change
from opendps.service_api.context import ServiceContext

# Azure accepts shared access keys of 16 to 64 bytes (base64-encoded); shorter keys would make
# SAS signatures guessable, longer ones only cost HMAC time.
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 64


def connection_string(instance: Instance, policy: AccessPolicy, key: str) -> str:
    """The form every Azure service SDK takes (protocol.md §7.4)."""
    return (
        f"HostName={instance.service_host_name};"
        f"SharedAccessKeyName={policy.name};SharedAccessKey={key}"
    )


def render_policy_with_keys(instance: Instance, policy: AccessPolicy) -> PolicyWithKeys:
    return PolicyWithKeys(
        name=policy.name,
        rights=format_rights(policy.rights),
        primary_key=policy.primary_key,
        secondary_key=policy.secondary_key,
        primary_connection_string=connection_string(instance, policy, policy.primary_key),
        secondary_connection_string=connection_string(instance, policy, policy.secondary_key),
    )


def parse_shared_access_key(value: str, which: str) -> str:
    """A base64 key of 16–64 bytes, or DpsError(400004) that does not echo the value."""
    try:
        size = len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        raise DpsError(INVALID_BODY, f"The {which} key is not valid base64.") from None
    if not MIN_KEY_BYTES <= size <= MAX_KEY_BYTES:
        raise DpsError(
            INVALID_BODY, f"The {which} key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes long."
        )
    return value


async def list_policies(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    policies = await ctx.store.list_access_policies(instance.id)
    summaries = [PolicySummary(name=p.name, rights=format_rights(p.rights)) for p in policies]
    return respond(PolicyList(value=summaries))


async def show_policy(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    policy = await _get_policy(ctx, instance, request.match_info["policy"])
    return respond(render_policy_with_keys(instance, policy))


async def create_policy(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    body = await read_model(request, ctx, PolicyCreate)
    name = parse_name(body.name, "Access policy name")
    rights = parse_rights(body.rights)
    if rights == Right.NONE:
        raise DpsError(INVALID_BODY, "An access policy needs at least one right.")
    if await ctx.store.get_access_policy(instance.id, name) is not None:
        raise DpsError(ALREADY_EXISTS, f"Access policy {name!r} already exists.")
    policy = AccessPolicy(
        instance_id=instance.id,
        name=name,
        primary_key=_given_or_new_key(ctx, body.primary_key, "primary"),
        secondary_key=_given_or_new_key(ctx, body.secondary_key, "secondary"),
        rights=rights,
    )
    stored = await ctx.store.put_access_policy(policy)
    await record_change(ctx, instance.id, caller.actor, "policy.create", f"policies/{name}")
    return respond(render_policy_with_keys(instance, stored), status=201)


def _given_or_new_key(ctx: ServiceContext, key: str | None, which: str) -> str:
    return ctx.ids.new_key() if key is None else parse_shared_access_key(key, which)


async def regenerate_key(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    body = await read_model(request, ctx, KeyRegeneration)
    policy = await _get_policy(ctx, instance, request.match_info["policy"])
    if body.key == "primary":
        policy = replace(policy, primary_key=ctx.ids.new_key())
    else:
        policy = replace(policy, secondary_key=ctx.ids.new_key())
    stored = await ctx.store.put_access_policy(policy)
    await record_change(
        ctx,
        instance.id,
        caller.actor,
        f"policy.regenerate-{body.key}-key",
        f"policies/{policy.name}",
    )
    return respond(render_policy_with_keys(instance, stored))


async def delete_policy(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    policy = await _get_policy(ctx, instance, request.match_info["policy"])
    if Right.SERVICE_CONFIG in policy.rights:
        others = [
            other
            for other in await ctx.store.list_access_policies(instance.id)
            if other.name.lower() != policy.name.lower() and Right.SERVICE_CONFIG in other.rights
        ]
        if not others:
            # Without a ServiceConfig policy only the deployment admin could manage the
            # instance again; refuse rather than lock its operators out by mistake.
            raise DpsError(
                CONFLICT,
                f"Access policy {policy.name!r} is the last one with ServiceConfig; "
                "create another before deleting it.",
            )
    await ctx.store.delete_access_policy(instance.id, policy.name)
    await record_change(ctx, instance.id, caller.actor, "policy.delete", f"policies/{policy.name}")
    return no_content()


async def _get_policy(ctx: ServiceContext, instance: Instance, name: str) -> AccessPolicy:
    policy = await ctx.store.get_access_policy(instance.id, name)
    if policy is None:
        raise DpsError(ACCESS_POLICY_NOT_FOUND, f"Access policy {name!r} does not exist.")
    return policy
