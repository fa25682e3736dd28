"""Device registration states: get, delete, and the per-group query (body-less or not)."""

from __future__ import annotations

from tests.integration.service_api.conftest import (
    KEY_READER,
    KEY_REGISTRATIONS,
    READER,
    REGISTRATION_READER,
    Service,
    assert_dps_error,
)
from tests.storefixtures import sample_registration

from opendps.model.audit import MeterKind
from opendps.model.errors import (
    ETAG_MISMATCH,
    INVALID_REGISTRATION_ID,
    REGISTRATION_NOT_FOUND,
    RIGHT_MISSING,
)


async def test_a_registration_state_is_read_with_azure_names(service: Service) -> None:
    await service.store.put_registration_state(
        sample_registration(service.a.id, "Dev-Reg", group_id="grp")
    )
    response = await service.call("GET", "/registrations/dev-reg")
    assert response.status == 200
    body = await response.json()
    assert body["registrationId"] == "Dev-Reg" and body["status"] == "assigned"
    assert body["assignedHub"] == "hub-1.example.net" and body["deviceId"] == "Dev-Reg"
    assert body["createdDateTimeUtc"].endswith("Z") and body["etag"] == '"r-1"'


async def test_a_missing_registration_state_is_404202(service: Service) -> None:
    await assert_dps_error(
        await service.call("GET", "/registrations/never"), 404, REGISTRATION_NOT_FOUND
    )
    await assert_dps_error(
        await service.call("DELETE", "/registrations/never"), 404, REGISTRATION_NOT_FOUND
    )


async def test_deleting_a_registration_state_answers_204_and_is_audited(service: Service) -> None:
    await service.store.put_registration_state(sample_registration(service.a.id, "dev-del"))
    response = await service.call("DELETE", "/Registrations/dev-del", headers={"If-Match": '"r-1"'})
    assert response.status == 204 and await response.read() == b""
    assert await service.store.get_registration_state(service.a.id, "dev-del") is None
    entries = await service.store.list_audit(instance_id=service.a.id, before_id=None, limit=5)
    assert [(e.action, e.target) for e in entries] == [
        ("registration.delete", "registrations/dev-del")
    ]
    meters = await service.store.list_meters(service.a.id)
    assert [(m.kind, m.count) for m in meters] == [(MeterKind.SERVICE_OPERATION, 1)]


async def test_a_stale_registration_delete_is_412_and_changes_nothing(service: Service) -> None:
    await service.store.put_registration_state(sample_registration(service.a.id, "dev-stale"))
    before = await service.snapshot()
    response = await service.call(
        "DELETE", "/registrations/dev-stale", headers={"If-Match": '"old"'}
    )
    await assert_dps_error(response, 412, ETAG_MISMATCH)
    assert await service.snapshot() == before


async def test_an_invalid_registration_id_is_refused_with_400001(service: Service) -> None:
    await assert_dps_error(
        await service.call("GET", "/registrations/bad%20id", encoded=True),
        400,
        INVALID_REGISTRATION_ID,
    )


async def test_the_group_query_pages_states_with_or_without_a_body(service: Service) -> None:
    for n in range(5):
        await service.store.put_registration_state(
            sample_registration(service.a.id, f"m-{n}", group_id="grp-q")
        )
    await service.store.put_registration_state(
        sample_registration(service.a.id, "other", group_id="grp-other")
    )
    seen: list[str] = []
    continuation: str | None = None
    pages = 0
    while True:
        headers = {"x-ms-max-item-count": "2"}
        if continuation:
            headers["x-ms-continuation"] = continuation
        # The Python client posts no body and no Content-Type; Node posts a QuerySpecification.
        body = {"query": "*"} if pages % 2 else None
        response = await service.call(
            "POST", "/registrations/grp-q/query", json=body, headers=headers
        )
        assert response.status == 200
        assert response.headers["x-ms-item-type"] == "DeviceRegistration"
        seen += [state["registrationId"] for state in await response.json()]
        pages += 1
        continuation = response.headers.get("x-ms-continuation")
        if continuation is None:
            break
    assert seen == [f"m-{n}" for n in range(5)] and pages == 3


async def test_a_group_without_states_queries_as_an_empty_array(service: Service) -> None:
    response = await service.call("POST", "/registrations/no-such-group/query")
    assert response.status == 200
    assert await response.json() == []
    assert "x-ms-continuation" not in response.headers


async def test_a_continuation_from_another_group_is_refused(service: Service) -> None:
    for n in range(3):
        await service.store.put_registration_state(
            sample_registration(service.a.id, f"g1-{n}", group_id="g1")
        )
    first = await service.call(
        "POST", "/registrations/g1/query", headers={"x-ms-max-item-count": "1"}
    )
    token = first.headers["x-ms-continuation"]
    response = await service.call(
        "POST", "/registrations/g2/query", headers={"x-ms-continuation": token}
    )
    await assert_dps_error(response, 400, 400008)


async def test_registration_rights_are_checked(service: Service) -> None:
    await service.store.put_registration_state(sample_registration(service.a.id, "dev-rights"))
    reader = service.token(key=KEY_READER, policy=READER)
    await assert_dps_error(
        await service.call("GET", "/registrations/dev-rights", token=reader), 401, RIGHT_MISSING
    )
    states = service.token(key=KEY_REGISTRATIONS, policy=REGISTRATION_READER)
    assert (await service.call("GET", "/registrations/dev-rights", token=states)).status == 200
    assert (await service.call("POST", "/registrations/grp/query", token=states)).status == 200
    before = await service.snapshot()
    await assert_dps_error(
        await service.call("DELETE", "/registrations/dev-rights", token=states), 401, RIGHT_MISSING
    )
    assert await service.snapshot() == before
