"""The audit log of administrative changes, newest first, paged backwards by entry id."""

from __future__ import annotations

from aiohttp import web

from opendps.admin_api.auth import AdminCaller, resolve_instance
from opendps.admin_api.schemas import AuditPage, AuditRecord
from opendps.admin_api.wire import respond
from opendps.model.errors import BAD_REQUEST, DpsError
from opendps.service_api.context import ServiceContext

# Audit entry ids are 64-bit signed integers in both databases.
_MAX_ENTRY_ID = 2**63 - 1


def parse_positive_int(value: str | None, name: str, *, maximum: int) -> int | None:
    """A query parameter that must be a positive integer (at most `maximum`); None if absent."""
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 0 < number <= maximum:
        raise DpsError(
            BAD_REQUEST, f"Query parameter {name!r} must be an integer from 1 to {maximum}."
        )
    return number


async def list_audit(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    limits = ctx.limits
    limit = (
        parse_positive_int(request.query.get("limit"), "limit", maximum=limits.max_page_size)
        or limits.default_page_size
    )
    before = parse_positive_int(request.query.get("before"), "before", maximum=_MAX_ENTRY_ID)
    instance_name = request.query.get("instance")
    instance_id = caller.instance_id  # a policy sees its own instance only
    if instance_name:
        instance_id = (await resolve_instance(ctx, caller, instance_name)).id
    entries = await ctx.store.list_audit(instance_id=instance_id, before_id=before, limit=limit)
    names = {instance.id: instance.name for instance in await ctx.store.list_instances()}
    records = [
        AuditRecord(
            id=entry.id,
            at=entry.at,
            instance=names.get(entry.instance_id) if entry.instance_id else None,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
        )
        for entry in entries
    ]
    next_before = entries[-1].id if len(entries) == limit and entries else None
    return respond(AuditPage(value=records, next_before=next_before))
