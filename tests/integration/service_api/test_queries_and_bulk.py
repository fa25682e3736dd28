"""Queries with continuation paging, and the four bulk modes (protocol.md §7.1-7.2)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.service_api.conftest import Service, assert_dps_error

from opendps.model.errors import (
    ALREADY_EXISTS,
    BAD_REQUEST,
    BULK_TOO_MANY,
    ENROLLMENT_GROUP_NOT_FOUND,
    ENROLLMENT_NOT_FOUND,
    ETAG_MISMATCH,
    INVALID_BODY,
    INVALID_QUERY_CONTINUATION,
    INVALID_REGISTRATION_ID,
)


async def _all_pages(service: Service, path: str, page_size: int) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    continuation: str | None = None
    while len(pages) < 50:
        headers = {"x-ms-max-item-count": str(page_size)}
        if continuation is not None:
            headers["x-ms-continuation"] = continuation
        response = await service.call(
            "POST", path, json={"query": "SELECT * FROM enrollments"}, headers=headers
        )
        assert response.status == 200, await response.text()
        assert response.headers["x-ms-max-item-count"] == str(page_size)
        pages.append(await response.json())
        continuation = response.headers.get("x-ms-continuation")
        if continuation is None:
            return pages
        assert continuation  # never sent empty: Node would restart from page 1
    raise AssertionError("paging did not end")


async def test_enrollment_queries_page_with_continuation_until_the_header_is_omitted(
    service: Service,
) -> None:
    ids = [f"q-{n:02d}" for n in range(7)]
    for rid in reversed(ids):
        await service.put_enrollment(rid)
    pages = await _all_pages(service, "/enrollments/query", 3)
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [e["registrationId"] for page in pages for e in page] == ids
    assert all(e["attestation"]["symmetricKey"] == {} for page in pages for e in page)


async def test_a_query_answer_is_an_array_with_the_item_type(service: Service) -> None:
    await service.put_enrollment("q-one")
    response = await service.call("POST", "/enrollments/query", json={"query": "*"})
    assert response.status == 200
    assert response.headers["x-ms-item-type"] == "Enrollment"
    assert response.headers["x-ms-max-item-count"] == "100"
    assert "x-ms-continuation" not in response.headers
    body = await response.json()
    assert isinstance(body, list) and [e["registrationId"] for e in body] == ["q-one"]


async def test_group_queries_page_too(service: Service) -> None:
    for n in range(4):
        await service.put_group(f"g-{n}")
    pages = await _all_pages(service, "/enrollmentGroups/query", 2)
    assert [[g["enrollmentGroupId"] for g in page] for page in pages] in (
        [["g-0", "g-1"], ["g-2", "g-3"]],
        [["g-0", "g-1"], ["g-2", "g-3"], []],
    )
    response = await service.call("POST", "/ENROLLMENTGROUPS/QUERY", json={"query": "*"})
    assert response.headers["x-ms-item-type"] == "EnrollmentGroup"


async def test_a_page_size_above_the_maximum_is_capped(service: Service) -> None:
    response = await service.call(
        "POST", "/enrollments/query", json={"query": "*"}, headers={"x-ms-max-item-count": "100000"}
    )
    assert response.headers["x-ms-max-item-count"] == str(service.ctx.limits.max_page_size)


async def test_a_query_without_a_body_selects_everything(service: Service) -> None:
    await service.put_enrollment("q-nobody")
    response = await service.call("POST", "/enrollments/query")
    assert [e["registrationId"] for e in await response.json()] == ["q-nobody"]


@pytest.mark.parametrize("body", [b"[]", b'{"query": 5}', b"{bad json"])
async def test_a_malformed_query_specification_is_refused(service: Service, body: bytes) -> None:
    await assert_dps_error(
        await service.call("POST", "/enrollments/query", data=body), 400, INVALID_BODY
    )


async def test_bad_paging_headers_are_refused(service: Service) -> None:
    bad_size = await service.call(
        "POST", "/enrollments/query", json={"query": "*"}, headers={"x-ms-max-item-count": "zero"}
    )
    await assert_dps_error(bad_size, 400, BAD_REQUEST)
    bad_token = await service.call(
        "POST", "/enrollments/query", json={"query": "*"}, headers={"x-ms-continuation": "garbage!"}
    )
    await assert_dps_error(bad_token, 400, INVALID_QUERY_CONTINUATION)


def _items(*ids: str, etag: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {"registrationId": rid, "attestation": {"type": "symmetricKey"}} for rid in ids
    ]
    if etag is not None:
        for item in items:
            item["etag"] = etag
    return items


async def _bulk(
    service: Service, body: dict[str, Any], path: str = "/enrollments"
) -> dict[str, Any]:
    response = await service.call("POST", path, json=body)
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def test_bulk_create_stores_every_item_and_reports_existing_ones_with_409(
    service: Service,
) -> None:
    created = await _bulk(service, {"mode": "create", "enrollments": _items("b-1", "b-2", "b-3")})
    assert created == {"isSuccessful": True, "errors": []}
    for rid in ("b-1", "b-2", "b-3"):
        assert await service.store.get_individual_enrollment(service.a.id, rid) is not None
    again = await _bulk(service, {"mode": "create", "enrollments": _items("b-1", "b-4")})
    assert again["isSuccessful"] is False
    assert [(e["registrationId"], e["errorCode"]) for e in again["errors"]] == [
        ("b-1", ALREADY_EXISTS)
    ]
    assert again["errors"][0]["errorStatus"]
    assert await service.store.get_individual_enrollment(service.a.id, "b-4") is not None


async def test_node_posts_bulk_operations_with_a_trailing_slash(service: Service) -> None:
    result = await _bulk(
        service, {"mode": "create", "enrollments": _items("slash-1")}, path="/enrollments/"
    )
    assert result["isSuccessful"] is True


async def test_bulk_update_creates_or_replaces(service: Service) -> None:
    first = await service.put_enrollment("u-1")
    result = await _bulk(
        service,
        {
            "mode": "update",
            "enrollments": [*_items("u-2"), {**first, "provisioningStatus": "disabled"}],
        },
    )
    assert result["isSuccessful"] is True
    updated = await service.store.get_individual_enrollment(service.a.id, "u-1")
    assert updated is not None and updated.spec.provisioning_status == "disabled"
    keys = updated.spec.attestation.symmetric_key
    assert (
        keys is not None and keys.primary_key == first["attestation"]["symmetricKey"]["primaryKey"]
    )
    assert await service.store.get_individual_enrollment(service.a.id, "u-2") is not None


async def test_bulk_update_if_match_etag_refuses_stale_items_with_412(service: Service) -> None:
    fresh = await service.put_enrollment("e-fresh")
    stale = await service.put_enrollment("e-stale")
    await service.put_enrollment("e-stale")
    result = await _bulk(
        service,
        {
            "mode": "updateIfMatchETag",
            "enrollments": [
                {**fresh, "deviceId": "fresh-device"},
                {**stale, "deviceId": "stale-device"},
                {"registrationId": "e-noetag", "attestation": {"type": "symmetricKey"}},
            ],
        },
    )
    assert result["isSuccessful"] is False
    assert [(e["registrationId"], e["errorCode"]) for e in result["errors"]] == [
        ("e-stale", ETAG_MISMATCH),
        ("e-noetag", ETAG_MISMATCH),
    ]
    stored_fresh = await service.store.get_individual_enrollment(service.a.id, "e-fresh")
    stored_stale = await service.store.get_individual_enrollment(service.a.id, "e-stale")
    assert stored_fresh is not None and stored_fresh.device_id == "fresh-device"
    assert stored_stale is not None and stored_stale.device_id is None
    assert await service.store.get_individual_enrollment(service.a.id, "e-noetag") is None


async def test_bulk_delete_removes_items_and_reports_missing_ones_with_404(
    service: Service,
) -> None:
    await _bulk(service, {"mode": "create", "enrollments": _items("d-1", "d-2")})
    result = await _bulk(
        service, {"mode": "delete", "enrollments": _items("d-1", "d-missing", "d-2")}
    )
    assert [(e["registrationId"], e["errorCode"]) for e in result["errors"]] == [
        ("d-missing", ENROLLMENT_NOT_FOUND)
    ]
    assert await service.store.get_individual_enrollment(service.a.id, "d-1") is None
    entries = await service.store.list_audit(instance_id=service.a.id, before_id=None, limit=10)
    assert [e.action for e in reversed(entries)] == ["enrollment.create"] * 2 + [
        "enrollment.delete"
    ] * 2


async def test_a_bulk_of_more_than_ten_items_is_refused_and_stores_nothing(
    service: Service,
) -> None:
    before = await service.snapshot()
    body = {"mode": "create", "enrollments": _items(*[f"many-{n}" for n in range(11)])}
    await assert_dps_error(
        await service.call("POST", "/enrollments", json=body), 400, BULK_TOO_MANY
    )
    assert await service.snapshot() == before


async def test_one_invalid_item_refuses_the_whole_bulk(service: Service) -> None:
    before = await service.snapshot()
    body = {
        "mode": "create",
        "enrollments": [
            *_items("ok-1"),
            {"registrationId": "ok-2", "attestation": {"type": "nope"}},
        ],
    }
    await assert_dps_error(await service.call("POST", "/enrollments", json=body), 400, INVALID_BODY)
    body = {"mode": "create", "enrollments": _items("ok-1", "bad id!")}
    await assert_dps_error(
        await service.call("POST", "/enrollments", json=body), 400, INVALID_REGISTRATION_ID
    )
    body = {"mode": "update", "enrollments": [*_items("ok-1"), *_items("ok-3")]}
    body["enrollments"][1]["iotHubs"] = ["unlinked.example.net"]
    await assert_dps_error(await service.call("POST", "/enrollments", json=body), 400, INVALID_BODY)
    await assert_dps_error(
        await service.call("POST", "/enrollments", json={"mode": "merge", "enrollments": []}),
        400,
        INVALID_BODY,
    )
    assert await service.snapshot() == before


async def test_group_bulk_uses_the_enrollment_groups_array(service: Service) -> None:
    groups = [
        {"enrollmentGroupId": gid, "attestation": {"type": "symmetricKey"}}
        for gid in ("bg-1", "bg-2")
    ]
    assert (
        await _bulk(
            service, {"mode": "create", "enrollmentGroups": groups}, path="/enrollmentGroups"
        )
    )["isSuccessful"]
    again = await _bulk(
        service, {"mode": "create", "enrollmentGroups": groups[:1]}, path="/enrollmentgroups/"
    )
    assert again["errors"] == [
        {
            "enrollmentGroupId": "bg-1",
            "errorCode": ALREADY_EXISTS,
            "errorStatus": again["errors"][0]["errorStatus"],
        }
    ]
    deleted = await _bulk(
        service,
        {
            "mode": "delete",
            "enrollmentGroups": [*groups, {**groups[0], "enrollmentGroupId": "bg-x"}],
        },
        path="/enrollmentGroups",
    )
    assert [(e["enrollmentGroupId"], e["errorCode"]) for e in deleted["errors"]] == [
        ("bg-x", ENROLLMENT_GROUP_NOT_FOUND)
    ]
    too_many = [{**groups[0], "enrollmentGroupId": f"m-{n}"} for n in range(11)]
    response = await service.call(
        "POST", "/enrollmentGroups", json={"mode": "create", "enrollmentGroups": too_many}
    )
    await assert_dps_error(response, 400, BULK_TOO_MANY)
