"""Paging: page sizes and continuation tokens (protocol.md §7.1)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendps.model.errors import BAD_REQUEST, INVALID_QUERY_CONTINUATION, DpsError
from opendps.service_api.context import ServiceLimits
from opendps.service_api.query import (
    MAX_CONTINUATION_LENGTH,
    ItemType,
    PageRequest,
    decode_continuation,
    encode_continuation,
    make_page,
    parse_page_request,
    parse_page_size,
)

LIMITS = ServiceLimits(default_page_size=100, max_page_size=1000)


@given(st.text(min_size=1, max_size=128))
def test_a_continuation_token_round_trips_its_cursor(cursor: str) -> None:
    token = encode_continuation(cursor, ItemType.ENROLLMENT)
    assert decode_continuation(token, ItemType.ENROLLMENT) == cursor


def test_tokens_are_header_safe_and_opaque() -> None:
    token = encode_continuation("sensor-001", ItemType.ENROLLMENT)
    assert token.isascii() and "=" not in token and " " not in token
    assert "sensor-001" not in token


def test_a_token_is_refused_for_another_listing() -> None:
    token = encode_continuation("a", ItemType.ENROLLMENT)
    with pytest.raises(DpsError) as err:
        decode_continuation(token, ItemType.ENROLLMENT_GROUP)
    assert err.value.error_code == INVALID_QUERY_CONTINUATION
    scoped = encode_continuation("a", ItemType.DEVICE_REGISTRATION, "group-1")
    with pytest.raises(DpsError):
        decode_continuation(scoped, ItemType.DEVICE_REGISTRATION, "group-2")
    assert decode_continuation(scoped, ItemType.DEVICE_REGISTRATION, "group-1") == "a"


@pytest.mark.parametrize(
    "token",
    [
        "!!!",
        "bm90IGpzb24",  # "not json"
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(
            json.dumps({"v": 2, "t": "Enrollment", "s": "", "a": "x"}).encode()
        ).decode(),
        base64.urlsafe_b64encode(
            json.dumps({"v": 1, "t": "Enrollment", "s": "", "a": 5}).encode()
        ).decode(),
        "A" * (MAX_CONTINUATION_LENGTH + 1),
    ],
)
def test_malformed_tokens_are_refused_with_400(token: str) -> None:
    with pytest.raises(DpsError) as err:
        decode_continuation(token, ItemType.ENROLLMENT)
    assert err.value.error_code == INVALID_QUERY_CONTINUATION and err.value.http_status == 400


@given(st.text(max_size=200))
def test_arbitrary_tokens_give_a_cursor_or_a_dps_error(token: str) -> None:
    try:
        decode_continuation(token, ItemType.ENROLLMENT)
    except DpsError as err:
        assert err.error_code == INVALID_QUERY_CONTINUATION


@pytest.mark.parametrize(
    ("header", "size"), [(None, 100), ("", 100), ("7", 7), (" 25 ", 25), ("5000", 1000)]
)
def test_page_size_defaults_and_is_capped(header: str | None, size: int) -> None:
    assert parse_page_size(header, LIMITS) == size


@pytest.mark.parametrize("header", ["0", "-3", "ten", "2.5"])
def test_a_page_size_that_is_not_a_positive_integer_is_refused(header: str) -> None:
    with pytest.raises(DpsError) as err:
        parse_page_size(header, LIMITS)
    assert err.value.error_code == BAD_REQUEST


def test_a_page_request_reads_both_headers() -> None:
    token = encode_continuation("k", ItemType.ENROLLMENT_GROUP)
    request = parse_page_request(
        ItemType.ENROLLMENT_GROUP, max_item_count="3", continuation=token, limits=LIMITS
    )
    assert request == PageRequest(after="k", limit=3)
    first = parse_page_request(
        ItemType.ENROLLMENT_GROUP, max_item_count=None, continuation=None, limits=LIMITS
    )
    assert first == PageRequest(after=None, limit=100)


def test_the_last_page_has_no_continuation() -> None:
    request = PageRequest(after=None, limit=2)
    last = make_page(["a"], None, request, ItemType.ENROLLMENT)
    assert last.continuation is None and last.page_size == 2
    more = make_page(["a", "b"], "b", request, ItemType.ENROLLMENT)
    assert more.continuation is not None
    assert decode_continuation(more.continuation, ItemType.ENROLLMENT) == "b"
