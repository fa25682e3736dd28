"""Device registration states: get, delete, and list those of an enrollment group.

Registration states are written only by the registration engine; operators may read and delete
them (deleting one lets the device register afresh, Azure's "deprovision" step, protocol.md
§7.3). The group listing answers an empty array for a group with no states, including a group
that does not exist (or no longer exists: deleting a group keeps its devices' states).
"""

from __future__ import annotations

from opendps.model.errors import REGISTRATION_NOT_FOUND, DpsError
from opendps.model.ids import parse_enrollment_group_id, parse_registration_id, registration_key
from opendps.model.instance import Right
from opendps.model.registration import RegistrationState
from opendps.service_api import converters, schemas
from opendps.service_api.audit import record_change
from opendps.service_api.auth import Caller, require_right
from opendps.service_api.context import ServiceContext
from opendps.service_api.etag import if_match_for_store
from opendps.service_api.query import ItemType, PageRequest, QueryPage, make_page

__all__ = ["delete_registration_state", "get_registration_state", "query_group_registration_states"]


async def get_registration_state(
    ctx: ServiceContext, caller: Caller, registration_id: str
) -> schemas.DeviceRegistrationState:
    """The device's registration state; DpsError 404 (REGISTRATION_NOT_FOUND) when absent."""
    require_right(caller, Right.REGISTRATION_STATUS_READ)
    state = await _require(ctx, caller, registration_id)
    return converters.registration_state_to_wire(state)


async def delete_registration_state(
    ctx: ServiceContext, caller: Caller, registration_id: str, *, if_match: str | None
) -> None:
    """Delete the device's registration state; 404 when absent, 412 on a stale If-Match."""
    require_right(caller, Right.REGISTRATION_STATUS_WRITE)
    state = await _require(ctx, caller, registration_id)
    deleted = await ctx.store.delete_registration_state(
        caller.instance.id, state.registration_id, if_match=if_match_for_store(if_match, state.etag)
    )
    if not deleted:  # removed concurrently, between the read and the delete
        raise _not_found(state.registration_id)
    await record_change(
        ctx,
        caller.instance.id,
        caller.actor,
        "registration.delete",
        f"registrations/{state.registration_id}",
    )


async def query_group_registration_states(
    ctx: ServiceContext, caller: Caller, group_id: str, page: PageRequest
) -> QueryPage[schemas.DeviceRegistrationState]:
    """One page of the registration states of the group's devices, by registration ID."""
    require_right(caller, Right.REGISTRATION_STATUS_READ)
    group_id = parse_enrollment_group_id(group_id)
    found = await ctx.store.list_registration_states_by_group(
        caller.instance.id, group_id, after=page.after, limit=page.limit
    )
    items = [converters.registration_state_to_wire(state) for state in found.items]
    return make_page(
        items, found.next_after, page, ItemType.DEVICE_REGISTRATION, registration_key(group_id)
    )


async def _require(ctx: ServiceContext, caller: Caller, registration_id: str) -> RegistrationState:
    state = await ctx.store.get_registration_state(
        caller.instance.id, parse_registration_id(registration_id)
    )
    if state is None:
        raise _not_found(registration_id)
    return state


def _not_found(registration_id: str) -> DpsError:
    return DpsError(REGISTRATION_NOT_FOUND, f"Registration state '{registration_id}' not found.")
