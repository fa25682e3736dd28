"""The device REST API over real HTTP on 127.0.0.1 (aiohttp TestClient, no TLS)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from tests.integration.engine.world import ID_SCOPE, SECONDARY, World, symmetric_spec

from opendps.allocation.custom import WebhookAllocator
from opendps.attestation.symmetric import derive_device_key
from opendps.engine.api import EngineSettings
from opendps.model.enrollment import CustomAllocationDefinition, ProvisioningStatus
from opendps.model.hub import AllocationPolicy
from opendps.model.registration import Operation, RegistrationStatus
from opendps.transports.http.render import JSON_CONTENT_TYPE
from opendps.transports.http.routes import MAX_DEVICE_BODY_BYTES

Client = TestClient[web.Request, web.Application]
HUB = "hub-1.example.net"
AZURE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
NODE_HEADERS = {"Accept": "application/json", "Content-Type": "application/json; charset=utf-8"}


def auth(
    world: World, registration_id: str, key: str | None = None, *, encode: bool = False
) -> dict[str, str]:
    credential = (
        world.credential(registration_id, key, encode=encode)
        if key
        else world.credential(registration_id, encode=encode)
    )
    return {**NODE_HEADERS, "Authorization": credential.token}


async def put_register(
    client: Client, world: World, registration_id: str, body: Any = None, **kwargs: Any
) -> aiohttp.ClientResponse:
    headers = kwargs.pop("headers", None) or auth(world, registration_id)
    data = json.dumps(body if body is not None else {"registrationId": registration_id})
    path = kwargs.pop(
        "path", f"/{ID_SCOPE}/registrations/{registration_id}/register?api-version=2019-03-31"
    )
    return await client.put(path, data=data, headers=headers)


def assert_dps_headers(response: aiohttp.ClientResponse) -> None:
    assert response.headers["Content-Type"] == JSON_CONTENT_TYPE
    assert response.headers["x-ms-request-id"]


async def error_of(response: aiohttp.ClientResponse, status: int, code: int) -> dict[str, Any]:
    assert response.status == status
    assert_dps_headers(response)
    assert response.headers["x-ms-error-code"] == str(code)
    body: dict[str, Any] = await response.json()
    assert body["errorCode"] == code and body["trackingId"] == response.headers["x-ms-request-id"]
    assert AZURE_TIME.match(body["timestampUtc"]) and body["info"] == {} and body["message"]
    return body


async def test_node_style_register_is_answered_200_assigned_in_azures_shape(
    client: Client, world: World
) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    response = await put_register(client, world, "dev-1")
    assert response.status == 200
    assert_dps_headers(response)
    assert "retry-after" not in response.headers
    body = await response.json()
    assert (
        set(body) == {"operationId", "status", "registrationState"} and body["status"] == "assigned"
    )
    state = body["registrationState"]
    assert list(state) == [
        "symmetricKey",
        "registrationId",
        "createdDateTimeUtc",
        "assignedHub",
        "deviceId",
        "status",
        "substatus",
        "lastUpdatedDateTimeUtc",
        "etag",
    ]
    assert (
        state["symmetricKey"] == {} and state["assignedHub"] == HUB and state["deviceId"] == "dev-1"
    )
    assert (state["status"], state["substatus"]) == ("assigned", "initialAssignment")
    assert AZURE_TIME.match(state["createdDateTimeUtc"]) and AZURE_TIME.match(
        state["lastUpdatedDateTimeUtc"]
    )


async def test_python_style_body_and_encoded_sr_with_secondary_key(
    client: Client, world: World
) -> None:
    await world.add_hub(HUB)
    await world.add_group("grp-1")
    key = derive_device_key(SECONDARY, "dev-9")
    response = await put_register(
        client,
        world,
        "dev-9",
        {"payload": None, "registrationId": "dev-9"},
        headers=auth(world, "dev-9", key, encode=True),
    )
    body = await response.json()
    assert response.status == 200 and body["registrationState"]["symmetricKey"] == {
        "enrollmentGroupId": "grp-1"
    }


async def test_literal_segments_match_in_any_case_and_unknown_content_encoding_is_ignored(
    client: Client, world: World
) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    headers = {**auth(world, "dev-1"), "Content-Encoding": "utf-8"}
    response = await put_register(
        client,
        world,
        "dev-1",
        headers=headers,
        path=f"/{ID_SCOPE.upper()}/Registrations/dev-1/REGISTER",
    )
    assert response.status == 200


async def test_operation_status_get_tolerates_nodes_json_body(client: Client, world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    operation_id = (await (await put_register(client, world, "dev-1")).json())["operationId"]
    response = await client.get(
        f"/{ID_SCOPE}/registrations/dev-1/operations/{operation_id}?api-version=2019-03-31",
        data="{}",
        headers=auth(world, "dev-1"),
    )
    assert response.status == 200
    body = await response.json()
    assert (body["operationId"], body["status"]) == (operation_id, "assigned")


async def test_device_reads_its_registration_state_with_post(client: Client, world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    path = f"/{ID_SCOPE}/registrations/dev-1?api-version=2019-03-31"
    missing = await client.post(
        path, data=json.dumps({"registrationId": "dev-1"}), headers=auth(world, "dev-1")
    )
    await error_of(missing, 404, 404202)
    await put_register(client, world, "dev-1")
    response = await client.post(
        path, data=json.dumps({"registrationId": "dev-1"}), headers=auth(world, "dev-1")
    )
    assert response.status == 200
    assert_dps_headers(response)
    body = await response.json()
    assert (body["registrationId"], body["assignedHub"], body["status"]) == (
        "dev-1",
        HUB,
        "assigned",
    )


@pytest.fixture
async def webhook(world: World) -> AsyncIterator[None]:
    async def allocate(request: web.Request) -> web.StreamResponse:
        return web.json_response({"iotHubHostName": HUB, "payload": {"from": "webhook"}})

    app = web.Application()
    app.router.add_post("/allocate", allocate)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        world.use(custom=WebhookAllocator(session))
        await world.set_instance_policy(
            AllocationPolicy.CUSTOM,
            custom_allocation=CustomAllocationDefinition(
                str(server.make_url("/allocate")), "2021-10-01"
            ),
        )
        yield
        await world.settle()
    await server.close()


async def test_webhook_registration_answers_202_then_polls_to_200(
    client: Client, world: World, webhook: None
) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    response = await put_register(
        client, world, "dev-1", {"registrationId": "dev-1", "payload": {"hi": 1}}
    )
    assert response.status == 202 and response.headers["retry-after"] == "2"
    assert_dps_headers(response)
    first = await response.json()
    assert first["status"] == "assigning" and set(first) == {"operationId", "status"}
    await world.settle()
    world.clock.advance(2)
    polled = await client.get(
        f"/{ID_SCOPE}/registrations/dev-1/operations/{first['operationId']}",
        headers=auth(world, "dev-1"),
    )
    assert polled.status == 200
    body = await polled.json()
    assert body["status"] == "assigned" and body["registrationState"]["payload"] == {
        "from": "webhook"
    }


async def test_a_pending_operation_polls_202_with_retry_after(client: Client, world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    # An operation another node left `assigning` a moment ago.
    now = world.clock.now()
    await world.store.put_operation(
        Operation("4.abc.op", world.instance.id, "dev-1", RegistrationStatus.ASSIGNING, now, now)
    )
    response = await client.get(
        f"/{ID_SCOPE}/registrations/dev-1/operations/4.abc.op", headers=auth(world, "dev-1")
    )
    assert response.status == 202 and response.headers["retry-after"] == "2"
    body = await response.json()
    assert body == {
        "operationId": "4.abc.op",
        "status": "assigning",
        "registrationState": {"registrationId": "dev-1", "status": "assigning"},
    }


async def test_wrong_key_unknown_device_and_unknown_scope_are_the_same_401(
    client: Client, world: World
) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    wrong = await put_register(
        client,
        world,
        "dev-1",
        headers=auth(world, "dev-1", "ERERERERERERERERERERERERERERERERERERERERERE="),
    )
    unknown = await put_register(client, world, "nobody")
    scope = "0ne99999999"
    other_scope = await client.put(
        f"/{scope}/registrations/dev-1/register",
        data="{}",
        headers={"Authorization": world.credential("dev-1", scope=scope).token},
    )
    missing = await client.put(f"/{ID_SCOPE}/registrations/dev-1/register", data="{}")
    bodies = [await error_of(r, 401, 401002) for r in (wrong, unknown, other_scope, missing)]
    assert {b["message"] for b in bodies} == {"Unauthorized"}


async def test_expired_token_is_401(client: Client, world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    token = world.credential("dev-1", expiry=int(world.clock.now().timestamp()) - 3600).token
    response = await put_register(client, world, "dev-1", headers={"Authorization": token})
    await error_of(response, 401, 401002)


async def test_disabled_enrollment_is_a_200_with_status_disabled(
    client: Client, world: World
) -> None:
    await world.add_hub(HUB)
    await world.add_individual(
        "dev-1", symmetric_spec(provisioning_status=ProvisioningStatus.DISABLED)
    )
    response = await put_register(client, world, "dev-1")
    assert response.status == 200
    assert (await response.json())["status"] == "disabled"


async def test_no_hub_is_a_200_failed_with_400208(client: Client, world: World) -> None:
    await world.add_individual("dev-1")
    body = await (await put_register(client, world, "dev-1")).json()
    assert body["status"] == "failed"
    assert (
        body["registrationState"]["errorCode"] == 400208
        and body["registrationState"]["errorMessage"]
    )


@pytest.mark.parametrize(
    "registration_id, body, status, code",
    [
        ("-bad", None, 400, 400001),
        ("dev-1", {"registrationId": "dev-2"}, 400, 400004),
        ("dev-1", {"registrationId": 7}, 400, 400004),
        ("dev-1", [1, 2], 400, 400004),
    ],
)
async def test_bad_requests_are_rejected_with_dps_errors(
    client: Client, world: World, registration_id: str, body: Any, status: int, code: int
) -> None:
    response = await put_register(
        client,
        world,
        registration_id,
        body if body is not None else {"registrationId": registration_id},
    )
    await error_of(response, status, code)


async def test_a_body_that_is_not_json_is_400(client: Client, world: World) -> None:
    response = await client.put(
        f"/{ID_SCOPE}/registrations/dev-1/register", data="{not json", headers=auth(world, "dev-1")
    )
    await error_of(response, 400, 400000)


async def test_an_oversized_body_is_413_whether_announced_or_chunked(
    client: Client, world: World
) -> None:
    big = json.dumps({"registrationId": "dev-1", "payload": "x" * MAX_DEVICE_BODY_BYTES})
    announced = await client.put(
        f"/{ID_SCOPE}/registrations/dev-1/register", data=big, headers=auth(world, "dev-1")
    )
    await error_of(announced, 413, 413000)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * (16 * 1024)

    chunked = await client.put(
        f"/{ID_SCOPE}/registrations/dev-1/register", data=chunks(), headers=auth(world, "dev-1")
    )
    await error_of(chunked, 413, 413000)


async def test_sixth_poll_in_ten_seconds_is_429_with_retry_after(
    client: Client, world: World
) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    operation_id = (await (await put_register(client, world, "dev-1")).json())["operationId"]
    path = f"/{ID_SCOPE}/registrations/dev-1/operations/{operation_id}"
    for _ in range(5):
        assert (await client.get(path, headers=auth(world, "dev-1"))).status == 200
    throttled = await client.get(path, headers=auth(world, "dev-1"))
    await error_of(throttled, 429, 429001)
    assert throttled.headers["retry-after"] == "10"


async def test_instance_registration_rate_is_429_and_stores_nothing(
    client: Client, world: World
) -> None:
    world.use(EngineSettings(instance_registrations_per_second=1, instance_registration_burst=1))
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    await world.add_individual("dev-2")
    assert (await put_register(client, world, "dev-1")).status == 200
    throttled = await put_register(client, world, "dev-2")
    await error_of(throttled, 429, 429001)
    assert throttled.headers["retry-after"] == "1"
    assert await world.store.get_registration_state(world.instance.id, "dev-2") is None


async def test_unknown_operation_is_404(client: Client, world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    response = await client.get(
        f"/{ID_SCOPE}/registrations/dev-1/operations/nope", headers=auth(world, "dev-1")
    )
    await error_of(response, 404, 404208)


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/registrations/dev-1"),
        ("POST", "/registrations/registrations/query"),
        ("PUT", "/enrollments/dev-1"),
        ("POST", "/enrollmentGroups/registrations"),
        ("PUT", "/notascope/registrations/dev-1/register"),
    ],
)
async def test_service_api_paths_are_not_device_routes(
    client: Client, method: str, path: str
) -> None:
    response = await client.request(method, path, data="{}")
    assert response.status in (404, 405)
    assert "x-ms-request-id" not in response.headers
