"""Enrollment groups: create/update, get, delete, attestation mechanism, query, bulk.

Same behaviour as `enrollments` for groups (protocol.md §7.1). Deleting a group leaves the
registration states of its devices in place, as Azure does: they stay readable and deletable
under `/registrations/{id}` until an operator removes them.
"""

from __future__ import annotations

from opendps.model.enrollment import EnrollmentGroup
from opendps.model.errors import ENROLLMENT_GROUP_NOT_FOUND, INVALID_ID, DpsError
from opendps.model.ids import parse_enrollment_group_id, registration_key
from opendps.model.instance import Right
from opendps.service_api import converters, schemas
from opendps.service_api.audit import record_change
from opendps.service_api.auth import Caller, require_right
from opendps.service_api.bulk import BulkItem, apply_bulk, check_bulk_size
from opendps.service_api.context import ServiceContext
from opendps.service_api.enrollment_spec import build_spec
from opendps.service_api.etag import if_match_for_store
from opendps.service_api.query import ItemType, PageRequest, QueryPage, make_page

__all__ = [
    "delete_group",
    "get_group",
    "get_group_attestation_mechanism",
    "put_group",
    "query_groups",
    "run_group_bulk_operation",
]


async def put_group(
    ctx: ServiceContext,
    caller: Caller,
    group_id: str,
    wire: schemas.EnrollmentGroup,
    *,
    if_match: str | None,
) -> schemas.EnrollmentGroup:
    """Create or replace the group `group_id` (the path ID); answer with keys.

    The body's `enrollmentGroupId` must name the same group (case-insensitively). Raises
    DpsError: 400 (invalid ID or settings), 412 (If-Match does not match), 401 (right missing).
    """
    require_right(caller, Right.ENROLLMENT_WRITE)
    path_id = parse_enrollment_group_id(group_id)
    if registration_key(wire.enrollment_group_id) != registration_key(path_id):
        raise DpsError(
            INVALID_ID,
            "The enrollmentGroupId in the body does not match the enrollment group ID in the path.",
        )
    existing = await ctx.store.get_enrollment_group(caller.instance.id, path_id)
    record = await _prepare(ctx, caller, wire, existing)
    stored = await ctx.store.put_enrollment_group(
        record, if_match=if_match_for_store(if_match, existing.etag if existing else None)
    )
    action = "enrollmentGroup.update" if existing is not None else "enrollmentGroup.create"
    await record_change(
        ctx, caller.instance.id, caller.actor, action, _target(stored.enrollment_group_id)
    )
    return converters.enrollment_group_to_wire(stored, full=True)


async def _prepare(
    ctx: ServiceContext,
    caller: Caller,
    wire: schemas.EnrollmentGroup,
    existing: EnrollmentGroup | None,
) -> EnrollmentGroup:
    """The record to store for `wire`: validated, with a new etag and timestamps."""
    group_id = parse_enrollment_group_id(wire.enrollment_group_id)
    spec = await build_spec(
        ctx,
        caller.instance,
        wire,
        kind="group",
        existing=existing.spec.attestation if existing is not None else None,
    )
    now = ctx.clock.now()
    return EnrollmentGroup(
        instance_id=caller.instance.id,
        enrollment_group_id=group_id,
        spec=spec,
        etag=ctx.ids.new_etag(),
        created_at=existing.created_at if existing is not None else now,
        updated_at=now,
    )


async def get_group(ctx: ServiceContext, caller: Caller, group_id: str) -> schemas.EnrollmentGroup:
    """The group without keys or certificate text."""
    require_right(caller, Right.ENROLLMENT_READ)
    group = await _require(ctx, caller, group_id)
    return converters.enrollment_group_to_wire(group, full=False)


async def delete_group(
    ctx: ServiceContext, caller: Caller, group_id: str, *, if_match: str | None
) -> None:
    """Delete the group (not its devices' registration states). 404 when absent, 412 if stale."""
    require_right(caller, Right.ENROLLMENT_WRITE)
    existing = await _require(ctx, caller, group_id)
    deleted = await ctx.store.delete_enrollment_group(
        caller.instance.id,
        existing.enrollment_group_id,
        if_match=if_match_for_store(if_match, existing.etag),
    )
    if not deleted:  # removed concurrently, between the read and the delete
        raise _not_found(existing.enrollment_group_id)
    await record_change(
        ctx,
        caller.instance.id,
        caller.actor,
        "enrollmentGroup.delete",
        _target(existing.enrollment_group_id),
    )


async def get_group_attestation_mechanism(
    ctx: ServiceContext, caller: Caller, group_id: str
) -> schemas.AttestationMechanism:
    """The group's attestation with its keys; EnrollmentRead, as for individual enrollments."""
    require_right(caller, Right.ENROLLMENT_READ)
    group = await _require(ctx, caller, group_id)
    return converters.attestation_to_wire(group.spec.attestation, full=True)


async def query_groups(
    ctx: ServiceContext, caller: Caller, page: PageRequest
) -> QueryPage[schemas.EnrollmentGroup]:
    """One page of the instance's groups, ordered by group ID, keys left out (any query text)."""
    require_right(caller, Right.ENROLLMENT_READ)
    found = await ctx.store.list_enrollment_groups(
        caller.instance.id, after=page.after, limit=page.limit
    )
    items = [converters.enrollment_group_to_wire(group, full=False) for group in found.items]
    return make_page(items, found.next_after, page, ItemType.ENROLLMENT_GROUP)


async def run_group_bulk_operation(
    ctx: ServiceContext, caller: Caller, operation: schemas.BulkEnrollmentGroupOperation
) -> schemas.BulkEnrollmentGroupOperationResult:
    """Apply a bulk operation on groups (see `service_api.bulk`); 400 refuses it whole."""
    require_right(caller, Right.ENROLLMENT_WRITE)
    check_bulk_size(ctx, len(operation.enrollment_groups))
    items = [
        await _bulk_item(ctx, caller, operation.mode, wire) for wire in operation.enrollment_groups
    ]
    instance_id = caller.instance.id

    async def put(record: EnrollmentGroup, if_match: str | None, create_only: bool) -> object:
        return await ctx.store.put_enrollment_group(
            record, if_match=if_match, create_only=create_only
        )

    async def delete(group_id: str) -> bool:
        return await ctx.store.delete_enrollment_group(instance_id, group_id, if_match=None)

    async def on_success(item: BulkItem[EnrollmentGroup]) -> None:
        action = _BULK_ACTIONS[operation.mode]
        await record_change(ctx, instance_id, caller.actor, action, _target(item.object_id))

    failures = await apply_bulk(
        operation.mode, items, put=put, delete=delete, not_found=_not_found, on_success=on_success
    )
    return schemas.BulkEnrollmentGroupOperationResult(
        is_successful=not failures,
        errors=[
            schemas.BulkEnrollmentGroupOperationError(
                enrollment_group_id=object_id, error_code=err.error_code, error_status=err.message
            )
            for object_id, err in failures
        ],
    )


_BULK_ACTIONS = {
    schemas.BulkEnrollmentMode.CREATE: "enrollmentGroup.create",
    schemas.BulkEnrollmentMode.UPDATE: "enrollmentGroup.update",
    schemas.BulkEnrollmentMode.UPDATE_IF_MATCH_ETAG: "enrollmentGroup.update",
    schemas.BulkEnrollmentMode.DELETE: "enrollmentGroup.delete",
}


async def _bulk_item(
    ctx: ServiceContext,
    caller: Caller,
    mode: schemas.BulkEnrollmentMode,
    wire: schemas.EnrollmentGroup,
) -> BulkItem[EnrollmentGroup]:
    group_id = parse_enrollment_group_id(wire.enrollment_group_id)
    if mode is schemas.BulkEnrollmentMode.DELETE:
        return BulkItem(group_id, None, wire.etag)
    existing = None
    if mode is not schemas.BulkEnrollmentMode.CREATE:
        existing = await ctx.store.get_enrollment_group(caller.instance.id, group_id)
    record = await _prepare(ctx, caller, wire, existing)
    return BulkItem(group_id, record, wire.etag)


async def _require(ctx: ServiceContext, caller: Caller, group_id: str) -> EnrollmentGroup:
    group = await ctx.store.get_enrollment_group(
        caller.instance.id, parse_enrollment_group_id(group_id)
    )
    if group is None:
        raise _not_found(group_id)
    return group


def _not_found(group_id: str) -> DpsError:
    return DpsError(ENROLLMENT_GROUP_NOT_FOUND, f"Enrollment group '{group_id}' not found.")


def _target(group_id: str) -> str:
    return f"enrollmentGroups/{group_id}"
