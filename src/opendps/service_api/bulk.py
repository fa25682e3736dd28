"""Bulk enrollment operations: the rules individual enrollments and groups share (protocol.md §7.2).

A bulk request is validated as a whole first (size, every item's shape and settings): any
problem refuses the whole request with 400 and nothing is written. Then each item is applied on
its own and item failures are reported per item, as Azure does: `create` fails with 409 for an
existing object, `updateIfMatchETag` with 412 for a stale or missing etag, `delete` with 404
for a missing object, `update` creates or replaces.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from opendps.model.errors import BULK_TOO_MANY, ETAG_MISMATCH, DpsError
from opendps.service_api.context import ServiceContext
from opendps.service_api.schemas import BulkEnrollmentMode

R = TypeVar("R")

__all__ = ["BulkItem", "apply_bulk", "check_bulk_size"]


@dataclass(frozen=True, slots=True)
class BulkItem(Generic[R]):
    """One validated item: its ID, the record to write (None for delete) and its body etag."""

    object_id: str
    record: R | None
    etag: str | None


def check_bulk_size(ctx: ServiceContext, count: int) -> None:
    if count > ctx.limits.bulk_max_items:
        raise DpsError(
            BULK_TOO_MANY,
            f"A bulk operation takes at most {ctx.limits.bulk_max_items} items; this one has {count}.",
        )


async def apply_bulk(
    mode: BulkEnrollmentMode,
    items: list[BulkItem[R]],
    *,
    put: Callable[[R, str | None, bool], Awaitable[object]],
    delete: Callable[[str], Awaitable[bool]],
    not_found: Callable[[str], DpsError],
    on_success: Callable[[BulkItem[R]], Awaitable[None]],
) -> list[tuple[str, DpsError]]:
    """Apply each item in order; return the failed items' IDs with their errors.

    `put(record, if_match, create_only)` and `delete(object_id)` are the store calls;
    `on_success` records the change (audit and metering) after each stored item.
    """
    failures: list[tuple[str, DpsError]] = []
    for item in items:
        try:
            await _apply_one(mode, item, put=put, delete=delete, not_found=not_found)
        except DpsError as err:
            failures.append((item.object_id, err))
            continue
        await on_success(item)
    return failures


async def _apply_one(
    mode: BulkEnrollmentMode,
    item: BulkItem[R],
    *,
    put: Callable[[R, str | None, bool], Awaitable[object]],
    delete: Callable[[str], Awaitable[bool]],
    not_found: Callable[[str], DpsError],
) -> None:
    if mode is BulkEnrollmentMode.DELETE:
        if not await delete(item.object_id):
            raise not_found(item.object_id)
        return
    assert item.record is not None  # prepared for every mode but delete
    if mode is BulkEnrollmentMode.CREATE:
        await put(item.record, None, True)
    elif mode is BulkEnrollmentMode.UPDATE:
        await put(item.record, None, False)
    else:
        if not item.etag:
            raise DpsError(ETAG_MISMATCH, "updateIfMatchETag needs the item's etag.")
        await put(item.record, item.etag, False)
