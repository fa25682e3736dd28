"""Per-instance usage counters: registrations, enrollment changes and service operations per day."""

from __future__ import annotations

from collections import Counter
from datetime import date

from aiohttp import web

from opendps.admin_api.auth import AdminCaller, resolve_instance
from opendps.admin_api.schemas import Metering, MeterRow
from opendps.admin_api.wire import respond
from opendps.model.errors import BAD_REQUEST, DpsError
from opendps.service_api.context import ServiceContext


def parse_day(value: str | None, name: str) -> date | None:
    """An ISO date (`2026-11-24`) from the query string, or DpsError(400000)."""
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise DpsError(
            BAD_REQUEST, f"Query parameter {name!r} must be a date (YYYY-MM-DD)."
        ) from None


async def show_metering(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    since = parse_day(request.query.get("since"), "since")
    meters = await ctx.store.list_meters(instance.id, since=since)
    rows = sorted(
        (MeterRow(day=m.day, kind=m.kind.value, count=m.count) for m in meters),
        key=lambda row: (row.day, row.kind),
    )
    totals: Counter[str] = Counter()
    for row in rows:
        totals[row.kind] += row.count
    return respond(Metering(instance=instance.name, since=since, value=rows, totals=dict(totals)))
