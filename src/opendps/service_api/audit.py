"""The audit trail and metering of administrative changes (ARCHITECTURE §6, §1 "Operation").

Every successful write through the service API or the admin API calls `record_change` once per
changed object, after the change is stored. Entries name who (the access policy, or "admin"),
what (`enrollment.create`, `enrollmentGroup.delete`, `registration.delete`, ...) and which
object (`enrollments/<id>`); they never carry a key or any other secret.
"""

from __future__ import annotations

from opendps.model.audit import AuditEntry, MeterKind
from opendps.service_api.context import ServiceContext

__all__ = ["ENROLLMENT_ACTION_PREFIXES", "record_change"]

# Changes to individual enrollments and groups are metered as enrollment changes (the unit
# Azure bills); every other administrative change counts as a service operation.
ENROLLMENT_ACTION_PREFIXES = ("enrollment.", "enrollmentGroup.")


async def record_change(
    ctx: ServiceContext,
    instance_id: str | None,
    actor: str,
    action: str,
    target: str,
    *,
    meter: MeterKind | None = None,
    count: int = 1,
) -> None:
    """Append an audit entry and count the change for the instance's metering.

    `meter` overrides the counter, which otherwise follows the action: `enrollment.*` and
    `enrollmentGroup.*` count as ENROLLMENT_CHANGE, anything else as SERVICE_OPERATION.
    Deployment-level changes (`instance_id=None`) are audited but not metered. `count` is how
    many objects one entry stands for (the admin API's bulk import writes one entry per import).
    """
    now = ctx.clock.now()
    await ctx.store.append_audit(
        AuditEntry(at=now, instance_id=instance_id, actor=actor, action=action, target=target)
    )
    # Every administrative write passes here, so this is where this node's caches of
    # instances, hubs and groups learn of it (other nodes notice within the cache TTL).
    for listener in ctx.change_listeners:
        listener(instance_id)
    if instance_id is None:
        return
    if meter is None:
        meter = (
            MeterKind.ENROLLMENT_CHANGE
            if action.startswith(ENROLLMENT_ACTION_PREFIXES)
            else MeterKind.SERVICE_OPERATION
        )
    await ctx.store.add_meter(instance_id, now.date(), meter, count)
