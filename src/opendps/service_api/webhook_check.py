"""The save-time check of a custom allocation webhook (docs/allocation.md).

Azure users' most common custom-allocation trouble is a webhook that cannot work (a missing
function key answers 401, a broken function 500) and shows only when a real device fails.
Saving an enrollment or group whose own policy is `custom` therefore makes one dry-run call to
its webhook (engine/explain.py `check_webhook`, the engine's own client and timeout); a failure
is returned as a warning and the save itself still succeeds. The DPS service API carries the
warning in a response header, which Azure's clients ignore, so the JSON body stays exactly
Azure's shape; the admin API puts it in a `warnings` list.
"""

from __future__ import annotations

from opendps.engine.explain import check_webhook
from opendps.model.enrollment import EnrollmentGroup, IndividualEnrollment
from opendps.model.hub import AllocationPolicy
from opendps.model.instance import Instance
from opendps.service_api.context import ServiceContext

WARNING_HEADER = "x-opendps-warning"
# HTTP header values are one line of visible ASCII; the warning is cut to this length so a
# webhook's long error never makes a header a proxy would refuse.
MAX_WARNING_HEADER_CHARS = 512


async def enrollment_webhook_warning(
    ctx: ServiceContext, instance: Instance, enrollment: IndividualEnrollment | EnrollmentGroup
) -> str | None:
    """The warning for a just-saved enrollment whose own policy is custom, else None."""
    if enrollment.spec.allocation_policy is not AllocationPolicy.CUSTOM:
        return None
    linked = await ctx.store.list_linked_hubs(instance.id)
    return await check_webhook(ctx.custom_allocator, instance, linked, enrollment)


async def instance_webhook_warning(ctx: ServiceContext, instance: Instance) -> str | None:
    """The warning for an instance allocation policy just saved as custom, else None."""
    if instance.allocation_policy is not AllocationPolicy.CUSTOM:
        return None
    linked = await ctx.store.list_linked_hubs(instance.id)
    return await check_webhook(ctx.custom_allocator, instance, linked, None)


def header_value(warning: str) -> str:
    """`warning` as a safe header value: printable ASCII on one line, bounded."""
    text = "".join(c if " " <= c <= "~" else "?" for c in warning)
    return text[:MAX_WARNING_HEADER_CHARS]
