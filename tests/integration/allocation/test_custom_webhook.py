"""The custom allocation webhook against a real aiohttp server on 127.0.0.1 (protocol.md §8)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from opendps.allocation.custom import WebhookAllocator, build_allocation_request
from opendps.allocation.select import CustomAllocationRequest
from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    CustomAllocationDefinition,
    EnrollmentGroup,
    EnrollmentSpec,
    IndividualEnrollment,
    SymmetricKeyAttestation,
)
from opendps.model.errors import (
    CUSTOM_ALLOCATION_FAILED,
    CUSTOM_ALLOCATION_TIMEOUT,
    NO_HUB,
    DpsError,
)
from opendps.model.hub import AllocationPolicy, HubKind, LinkedHub

HUB_A = LinkedHub("inst", "hub-a.example.net", HubKind.BUILTIN)
HUB_B = LinkedHub("inst", "hub-b.example.net", HubKind.BUILTIN)
SECRET = "c2VjcmV0LWdyb3VwLWtleS1tdXN0LW5ldmVyLWxlYXZl"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


class Webhook:
    """A local webhook that records what it received and answers with `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.received: list[dict[str, Any]] = []
        self.handler = handler
        app = web.Application()
        app.router.add_post("/api/allocate", self._handle)
        self.server = TestServer(app, host="127.0.0.1", port=0)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(await request.json())
        return await self.handler(request)

    def url(self) -> str:
        return str(self.server.make_url("/api/allocate")) + "?code=function-key"


@pytest.fixture
async def webhook() -> AsyncIterator[Callable[[Handler], Awaitable[Webhook]]]:
    started: list[Webhook] = []

    async def start(handler: Handler) -> Webhook:
        hook = Webhook(handler)
        await hook.server.start_server()
        started.append(hook)
        return hook

    yield start
    for hook in started:
        await hook.server.close()


def group_request(url: str, **kwargs: Any) -> CustomAllocationRequest:
    spec = EnrollmentSpec(
        Attestation(
            AttestationType.SYMMETRIC_KEY, symmetric_key=SymmetricKeyAttestation(SECRET, SECRET)
        ),
        allocation_policy=AllocationPolicy.CUSTOM,
        custom_allocation=CustomAllocationDefinition(url, "2021-10-01"),
        initial_twin={"tags": {"t": 1}},
    )
    group = EnrollmentGroup("inst", "grp-1", spec, etag='"e1"', created_at=T0, updated_at=T0)
    defaults: dict[str, Any] = {
        "definition": spec.custom_allocation,
        "enrollment": group,
        "registration_id": "dev-1",
        "attestation_type": AttestationType.SYMMETRIC_KEY,
        "payload": {"model": "x1"},
        "candidates": (HUB_A, HUB_B),
    }
    defaults.update(kwargs)
    return CustomAllocationRequest(**defaults)


def answer(body: object, status: int = 200) -> Handler:
    async def handle(_: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return handle


async def test_webhook_assigns_the_hub_and_returns_twin_and_payload(
    session: aiohttp.ClientSession, webhook: Callable[[Handler], Awaitable[Webhook]]
) -> None:
    twin = {"tags": {"floor": 3}, "properties": {"desired": {"fan": "on"}}}
    hook = await webhook(
        answer(
            {"iotHubHostName": "HUB-B.example.net", "initialTwin": twin, "payload": {"hello": [1]}}
        )
    )
    result = await WebhookAllocator(session).allocate(group_request(hook.url()))
    assert result.hub == HUB_B
    assert (result.initial_twin, result.payload) == (twin, {"hello": [1]})


async def test_webhook_receives_the_azure_functions_allocation_request(
    session: aiohttp.ClientSession, webhook: Callable[[Handler], Awaitable[Webhook]]
) -> None:
    hook = await webhook(answer({"iotHubHostname": "hub-a.example.net"}))
    request = group_request(hook.url(), current_hub="hub-a.example.net", current_device_id="dev-1")
    result = await WebhookAllocator(session).allocate(request)
    assert result.hub == HUB_A and result.initial_twin is None and result.payload is None
    sent = hook.received[0]
    assert set(sent) == {"enrollmentGroup", "deviceRuntimeContext", "linkedHubs"}
    assert sent["linkedHubs"] == ["hub-a.example.net", "hub-b.example.net"]
    assert sent["deviceRuntimeContext"] == {
        "registrationId": "dev-1",
        "currentIotHubHostName": "hub-a.example.net",
        "currentDeviceId": "dev-1",
        "symmetricKey": {},
        "payload": {"model": "x1"},
    }
    group = sent["enrollmentGroup"]
    assert group["enrollmentGroupId"] == "grp-1" and group["attestation"] == {
        "type": "symmetricKey"
    }
    assert group["customAllocationDefinition"]["webhookUrl"].endswith("/api/allocate?****")
    assert group["initialTwin"] == {"tags": {"t": 1}} and group["etag"] == '"e1"'
    assert SECRET not in json.dumps(sent) and "function-key" not in json.dumps(sent)


async def test_individual_enrollment_is_sent_as_individual_enrollment() -> None:
    base = group_request("https://hook.example.net/x")
    individual = IndividualEnrollment("inst", "dev-1", base.enrollment.spec, device_id="pump")
    body = build_allocation_request(
        group_request("https://hook.example.net/x", enrollment=individual)
    )
    assert body["individualEnrollment"]["registrationId"] == "dev-1"
    assert body["individualEnrollment"]["deviceId"] == "pump"
    assert "enrollmentGroup" not in body
    assert "currentIotHubHostName" not in body["deviceRuntimeContext"]


async def test_slow_webhook_times_out_and_fails(
    session: aiohttp.ClientSession, webhook: Callable[[Handler], Awaitable[Webhook]]
) -> None:
    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.json_response({"iotHubHostName": "hub-a.example.net"})

    hook = await webhook(slow)
    started = asyncio.get_running_loop().time()
    with pytest.raises(DpsError) as caught:
        await WebhookAllocator(session, timeout_seconds=0.3).allocate(group_request(hook.url()))
    assert caught.value.error_code == CUSTOM_ALLOCATION_TIMEOUT
    assert asyncio.get_running_loop().time() - started < 2


@pytest.mark.parametrize("status", [500, 404, 302])
async def test_non_2xx_answer_fails(
    session: aiohttp.ClientSession, webhook: Callable[[Handler], Awaitable[Webhook]], status: int
) -> None:
    async def refuse(_: web.Request) -> web.StreamResponse:
        return web.Response(
            status=status,
            text="boom",
            headers={"Location": "/elsewhere"} if status == 302 else None,
        )

    hook = await webhook(refuse)
    with pytest.raises(DpsError) as caught:
        await WebhookAllocator(session).allocate(group_request(hook.url()))
    assert caught.value.error_code == CUSTOM_ALLOCATION_FAILED


async def test_a_hub_that_is_not_linked_fails_with_no_hub(
    session: aiohttp.ClientSession, webhook: Callable[[Handler], Awaitable[Webhook]]
) -> None:
    hook = await webhook(answer({"iotHubHostName": "rogue.example.net"}))
    with pytest.raises(DpsError) as caught:
        await WebhookAllocator(session).allocate(group_request(hook.url()))
    assert caught.value.error_code == NO_HUB


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"payload": 1}',
        b'{"iotHubHostName": 7}',
        b'{"iotHubHostName": "hub-a.example.net", "initialTwin": []}',
    ],
)
async def test_a_malformed_answer_fails(
    session: aiohttp.ClientSession, webhook: Callable[[Handler], Awaitable[Webhook]], body: bytes
) -> None:
    async def handle(_: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    hook = await webhook(handle)
    with pytest.raises(DpsError) as caught:
        await WebhookAllocator(session).allocate(group_request(hook.url()))
    assert caught.value.error_code == CUSTOM_ALLOCATION_FAILED


async def test_an_unreachable_webhook_fails(session: aiohttp.ClientSession) -> None:
    with pytest.raises(DpsError) as caught:
        await WebhookAllocator(session).allocate(group_request("http://127.0.0.1:9/api"))
    assert caught.value.error_code == CUSTOM_ALLOCATION_FAILED
    assert "127.0.0.1" not in caught.value.message
