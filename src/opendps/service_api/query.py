"""Query paging for the service API: page sizes and continuation tokens (protocol.md §7.1).

Clients page with two headers: `x-ms-max-item-count` (page size) on the request, and
`x-ms-continuation`, which the server returns while more pages exist and the client sends back
for the next page. The token is opaque to clients; here it is URL-safe base64 of a small JSON
object holding the store's keyset cursor (the last key of the previous page) and the kind of
listing it belongs to, so that a token is never replayed against another listing. On the last
page the header is **omitted**, not sent empty: Node's `Query` sets `hasMoreResults` from the
header's presence and restarts from page 1 on an empty token (clients.md §4a).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass
from typing import Generic, TypeVar

from opendps.model.errors import BAD_REQUEST, INVALID_QUERY_CONTINUATION, DpsError
from opendps.service_api.context import ServiceLimits

T = TypeVar("T")

# Header names as clients send and read them (case-insensitive in HTTP).
MAX_ITEM_COUNT_HEADER = "x-ms-max-item-count"
CONTINUATION_HEADER = "x-ms-continuation"
ITEM_TYPE_HEADER = "x-ms-item-type"
# A cursor is one case-folded registration or group ID (≤128 characters) plus a little JSON;
# anything much longer is not a token we issued and is refused before decoding.
MAX_CONTINUATION_LENGTH = 1024
_TOKEN_VERSION = 1


class ItemType(enum.StrEnum):
    """`x-ms-item-type` values; C# parses them into an enum by name, so spell them exactly."""

    ENROLLMENT = "Enrollment"
    ENROLLMENT_GROUP = "EnrollmentGroup"
    DEVICE_REGISTRATION = "DeviceRegistration"


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Where a page starts (`after`, the store's keyset cursor) and how many items it holds."""

    after: str | None
    limit: int


@dataclass(frozen=True, slots=True)
class QueryPage(Generic[T]):
    """One page of results with its response headers' values."""

    items: list[T]
    item_type: ItemType
    page_size: int
    continuation: str | None  # None on the last page: the header is then omitted


def parse_page_request(
    item_type: ItemType,
    *,
    max_item_count: str | None,
    continuation: str | None,
    limits: ServiceLimits,
    scope: str = "",
) -> PageRequest:
    """Read the paging headers. `scope` ties a token to one listing (the group of a
    registration-state query). Raises DpsError(400) for a bad size or a foreign token."""
    return PageRequest(
        after=decode_continuation(continuation, item_type, scope) if continuation else None,
        limit=parse_page_size(max_item_count, limits),
    )


def parse_page_size(value: str | None, limits: ServiceLimits) -> int:
    """The page size: the default when absent, capped at the maximum, at least 1."""
    if value is None or not value.strip():
        return limits.default_page_size
    try:
        size = int(value.strip())
    except ValueError:
        raise DpsError(
            BAD_REQUEST, f"{MAX_ITEM_COUNT_HEADER} must be a positive integer."
        ) from None
    if size < 1:
        raise DpsError(BAD_REQUEST, f"{MAX_ITEM_COUNT_HEADER} must be a positive integer.")
    return min(size, limits.max_page_size)


def encode_continuation(after: str, item_type: ItemType, scope: str = "") -> str:
    payload = json.dumps({"v": _TOKEN_VERSION, "t": str(item_type), "s": scope, "a": after})
    return base64.urlsafe_b64encode(payload.encode()).decode("ascii").rstrip("=")


def decode_continuation(token: str, item_type: ItemType, scope: str = "") -> str:
    """The cursor inside a token this module issued for the same listing, else DpsError(400)."""
    if len(token) > MAX_CONTINUATION_LENGTH:
        raise _bad_token()
    try:
        raw = base64.urlsafe_b64decode(token.strip() + "=" * (-len(token.strip()) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _bad_token() from None
    if not isinstance(payload, dict) or payload.get("v") != _TOKEN_VERSION:
        raise _bad_token()
    after = payload.get("a")
    if (
        payload.get("t") != str(item_type)
        or payload.get("s") != scope
        or not isinstance(after, str)
    ):
        raise _bad_token()
    return after


def make_page(
    items: list[T],
    next_after: str | None,
    request: PageRequest,
    item_type: ItemType,
    scope: str = "",
) -> QueryPage[T]:
    """Wrap a store page with its response headers' values."""
    continuation = (
        encode_continuation(next_after, item_type, scope) if next_after is not None else None
    )
    return QueryPage(
        items=items, item_type=item_type, page_size=request.limit, continuation=continuation
    )


def _bad_token() -> DpsError:
    return DpsError(INVALID_QUERY_CONTINUATION, f"The {CONTINUATION_HEADER} token is not valid.")
