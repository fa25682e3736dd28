"""Individual enrollments: create/update, get, delete, attestation mechanism, query, bulk.

The functions here are the service API's behaviour, free of HTTP: the route glue and the web
console both call them with an authenticated `Caller`. Answers follow clients.md §4: the PUT
answer echoes symmetric keys and certificates, GET and query leave them out, the
attestation-mechanism call returns them.
"""

from __future__ import annotations

from opendps.attestation.tpm import same_key
from opendps.engine.tpm import enrolled_endorsement_key
from opendps.model.enrollment import AttestationType, IndividualEnrollment
from opendps.model.errors import ENROLLMENT_NOT_FOUND, INVALID_REGISTRATION_ID, DpsError
from opendps.model.ids import parse_device_id, parse_registration_id, registration_key
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
    "delete_enrollment",
    "get_attestation_mechanism",
    "get_enrollment",
    "put_enrollment",
    "query_enrollments",
    "run_bulk_operation",
]


async def put_enrollment(
    ctx: ServiceContext,
    caller: Caller,
    registration_id: str,
    wire: schemas.IndividualEnrollment,
    *,
    if_match: str | None,
) -> schemas.IndividualEnrollment:
    """Create or replace the enrollment `registration_id` (the path ID); answer with keys.

    The body's `registrationId` must name the same enrollment (case-insensitively). Raises
    DpsError: 400 (invalid ID or settings), 412 (If-Match does not match), 401 (right missing).
    """
    require_right(caller, Right.ENROLLMENT_WRITE)
    path_id = parse_registration_id(registration_id)
    if registration_key(wire.registration_id) != registration_key(path_id):
        raise DpsError(
            INVALID_REGISTRATION_ID,
            "The registrationId in the body does not match the registration ID in the path.",
        )
    existing = await ctx.store.get_individual_enrollment(caller.instance.id, path_id)
    record = await _prepare(ctx, caller, wire, existing)
    stored = await ctx.store.put_individual_enrollment(
        record, if_match=if_match_for_store(if_match, existing.etag if existing else None)
    )
    await _forget_registration_of_old_tpm(ctx, existing, stored)
    action = "enrollment.update" if existing is not None else "enrollment.create"
    await record_change(
        ctx, caller.instance.id, caller.actor, action, _target(stored.registration_id)
    )
    return converters.individual_enrollment_to_wire(stored, full=True)


async def _prepare(
    ctx: ServiceContext,
    caller: Caller,
    wire: schemas.IndividualEnrollment,
    existing: IndividualEnrollment | None,
) -> IndividualEnrollment:
    """The record to store for `wire`: validated, with a new etag and timestamps."""
    registration_id = parse_registration_id(wire.registration_id)
    device_id = parse_device_id(wire.device_id) if wire.device_id is not None else None
    spec = await build_spec(
        ctx,
        caller.instance,
        wire,
        kind="individual",
        existing=existing.spec.attestation if existing is not None else None,
    )
    now = ctx.clock.now()
    return IndividualEnrollment(
        instance_id=caller.instance.id,
        registration_id=registration_id,
        spec=spec,
        device_id=device_id,
        optional_device_information=wire.optional_device_information,
        etag=ctx.ids.new_etag(),
        created_at=existing.created_at if existing is not None else now,
        updated_at=now,
    )


async def _forget_registration_of_old_tpm(
    ctx: ServiceContext, existing: IndividualEnrollment | None, stored: IndividualEnrollment
) -> None:
    """A new endorsement key is a new device (as Azure): the old TPM's registration state and
    pending challenge go, so it cannot finish a registration nor be reported as registered."""
    old = enrolled_endorsement_key(existing) if existing is not None else None
    new = enrolled_endorsement_key(stored)
    if old is None or (new is not None and same_key(old, new)):
        return
    await ctx.store.delete_registration_state(
        stored.instance_id, stored.registration_id, if_match=None
    )
    await ctx.store.delete_tpm_challenge(stored.instance_id, stored.registration_id)


async def get_enrollment(
    ctx: ServiceContext, caller: Caller, registration_id: str
) -> schemas.IndividualEnrollment:
    """The enrollment without keys or certificate text, with its registration state if any."""
    require_right(caller, Right.ENROLLMENT_READ)
    enrollment = await _require(ctx, caller, registration_id)
    return await _to_wire_with_state(ctx, enrollment)


async def _to_wire_with_state(
    ctx: ServiceContext, enrollment: IndividualEnrollment
) -> schemas.IndividualEnrollment:
    state = await ctx.store.get_registration_state(
        enrollment.instance_id, enrollment.registration_id
    )
    # A state written for a group enrollment of the same ID is not this enrollment's.
    if state is not None and state.enrollment_group_id is not None:
        state = None
    return converters.individual_enrollment_to_wire(
        enrollment, full=False, registration_state=state
    )


async def delete_enrollment(
    ctx: ServiceContext, caller: Caller, registration_id: str, *, if_match: str | None
) -> None:
    """Delete the enrollment. Raises DpsError 404 when absent, 412 on a stale If-Match."""
    require_right(caller, Right.ENROLLMENT_WRITE)
    existing = await _require(ctx, caller, registration_id)
    deleted = await ctx.store.delete_individual_enrollment(
        caller.instance.id,
        existing.registration_id,
        if_match=if_match_for_store(if_match, existing.etag),
    )
    if not deleted:  # removed concurrently, between the read and the delete
        raise _not_found(existing.registration_id)
    await record_change(
        ctx,
        caller.instance.id,
        caller.actor,
        "enrollment.delete",
        _target(existing.registration_id),
    )


async def get_attestation_mechanism(
    ctx: ServiceContext, caller: Caller, registration_id: str
) -> schemas.AttestationMechanism:
    """The attestation with its keys (what `az ... --show-keys` reads, protocol.md §7.2).

    Needs EnrollmentRead, the right Azure documents for reading enrollments (protocol.md §7.1
    leaves Read vs Write open; reading keys is a read, as GET answered with keys until 2020).
    """
    require_right(caller, Right.ENROLLMENT_READ)
    enrollment = await _require(ctx, caller, registration_id)
    return converters.attestation_to_wire(enrollment.spec.attestation, full=True)


async def query_enrollments(
    ctx: ServiceContext, caller: Caller, page: PageRequest
) -> QueryPage[schemas.IndividualEnrollment]:
    """One page of the instance's enrollments, ordered by registration ID, keys left out.

    Every query text selects all enrollments (protocol.md §7.1: clients send `*` or
    `SELECT * FROM enrollments`; filtering is not part of the contract).
    """
    require_right(caller, Right.ENROLLMENT_READ)
    found = await ctx.store.list_individual_enrollments(
        caller.instance.id, after=page.after, limit=page.limit
    )
    items = [await _to_wire_with_state(ctx, enrollment) for enrollment in found.items]
    return make_page(items, found.next_after, page, ItemType.ENROLLMENT)


async def run_bulk_operation(
    ctx: ServiceContext, caller: Caller, operation: schemas.BulkEnrollmentOperation
) -> schemas.BulkEnrollmentOperationResult:
    """Apply a bulk operation (see `service_api.bulk` for the rules); 400 refuses it whole."""
    require_right(caller, Right.ENROLLMENT_WRITE)
    check_bulk_size(ctx, len(operation.enrollments))
    items = [await _bulk_item(ctx, caller, operation.mode, wire) for wire in operation.enrollments]
    instance_id = caller.instance.id

    async def put(record: IndividualEnrollment, if_match: str | None, create_only: bool) -> object:
        existing = None
        if record.spec.attestation.type is AttestationType.TPM and not create_only:
            existing = await ctx.store.get_individual_enrollment(
                instance_id, record.registration_id
            )
        stored = await ctx.store.put_individual_enrollment(
            record, if_match=if_match, create_only=create_only
        )
        await _forget_registration_of_old_tpm(ctx, existing, stored)
        return stored

    async def delete(registration_id: str) -> bool:
        return await ctx.store.delete_individual_enrollment(
            instance_id, registration_id, if_match=None
        )

    async def on_success(item: BulkItem[IndividualEnrollment]) -> None:
        action = _BULK_ACTIONS[operation.mode]
        await record_change(ctx, instance_id, caller.actor, action, _target(item.object_id))

    failures = await apply_bulk(
        operation.mode, items, put=put, delete=delete, not_found=_not_found, on_success=on_success
    )
    return schemas.BulkEnrollmentOperationResult(
        is_successful=not failures,
        errors=[
            schemas.BulkEnrollmentOperationError(
                registration_id=object_id, error_code=err.error_code, error_status=err.message
            )
            for object_id, err in failures
        ],
    )


_BULK_ACTIONS = {
    schemas.BulkEnrollmentMode.CREATE: "enrollment.create",
    schemas.BulkEnrollmentMode.UPDATE: "enrollment.update",
    schemas.BulkEnrollmentMode.UPDATE_IF_MATCH_ETAG: "enrollment.update",
    schemas.BulkEnrollmentMode.DELETE: "enrollment.delete",
}


async def _bulk_item(
    ctx: ServiceContext,
    caller: Caller,
    mode: schemas.BulkEnrollmentMode,
    wire: schemas.IndividualEnrollment,
) -> BulkItem[IndividualEnrollment]:
    registration_id = parse_registration_id(wire.registration_id)
    if mode is schemas.BulkEnrollmentMode.DELETE:
        return BulkItem(registration_id, None, wire.etag)
    existing = None
    if mode is not schemas.BulkEnrollmentMode.CREATE:
        existing = await ctx.store.get_individual_enrollment(caller.instance.id, registration_id)
    record = await _prepare(ctx, caller, wire, existing)
    return BulkItem(registration_id, record, wire.etag)


async def _require(
    ctx: ServiceContext, caller: Caller, registration_id: str
) -> IndividualEnrollment:
    enrollment = await ctx.store.get_individual_enrollment(
        caller.instance.id, parse_registration_id(registration_id)
    )
    if enrollment is None:
        raise _not_found(registration_id)
    return enrollment


def _not_found(registration_id: str) -> DpsError:
    return DpsError(ENROLLMENT_NOT_FOUND, f"Enrollment '{registration_id}' not found.")


def _target(registration_id: str) -> str:
    return f"enrollments/{registration_id}"
