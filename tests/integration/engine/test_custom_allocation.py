"""Custom allocation through the engine: 202 `assigning`, background webhook call, polls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from tests.integration.engine.world import World, symmetric_spec

from opendps.allocation.custom import WebhookAllocator
from opendps.model.enrollment import CustomAllocationDefinition, ReprovisionPolicy
from opendps.model.errors import CUSTOM_ALLOCATION_FAILED, CUSTOM_ALLOCATION_TIMEOUT, NO_HUB
from opendps.model.hub import AllocationPolicy
from opendps.model.registration import RegistrationStatus, Substatus

A, B = "hub-a.example.net", "hub-b.example.net"


class Hook:
    def __init__(self) -> None:
        self.answer: Any = {"iotHubHostName": B, "payload": {"ok": True}}
        self.status = 200
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        await self.release.wait()
        await asyncio.sleep(self.delay)
        return web.json_response(self.answer, status=self.status)


@pytest.fixture
async def hook(world: World) -> AsyncIterator[Hook]:
    hook = Hook()
    app = web.Application()
    app.router.add_post("/allocate", hook.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        world.use(custom=WebhookAllocator(session, timeout_seconds=0.5))
        await world.add_hub(A)
        await world.add_hub(B)
        definition = CustomAllocationDefinition(str(server.make_url("/allocate")), "2021-10-01")
        await world.set_instance_policy(AllocationPolicy.CUSTOM, custom_allocation=definition)
        yield hook
        await world.settle()
    await server.close()


async def test_custom_registration_answers_assigning_then_polls_to_assigned(
    world: World, hook: Hook
) -> None:
    hook.answer = {
        "iotHubHostName": B,
        "initialTwin": {"tags": {"by": "webhook"}, "properties": {"desired": {"x": 1}}},
        "payload": {"welcome": "dev-1"},
    }
    hook.release.clear()
    await world.add_individual("dev-1", symmetric_spec(initial_twin={"tags": {"by": "enrollment"}}))
    first = await world.register("dev-1", payload={"model": "m1"})
    assert (first.status, first.retry_after, first.registration) == (
        RegistrationStatus.ASSIGNING,
        2,
        None,
    )
    pending = await world.poll("dev-1", first.operation_id)
    assert pending.status is RegistrationStatus.ASSIGNING and pending.retry_after == 2
    again = await world.register("dev-1")  # while the webhook runs: the same operation
    assert (again.status, again.operation_id) == (RegistrationStatus.ASSIGNING, first.operation_id)
    hook.release.set()
    await world.settle()
    done = await world.poll("dev-1", first.operation_id)
    assert done.status is RegistrationStatus.ASSIGNED and done.registration is not None
    assert (done.registration.assigned_hub, done.registration.substatus) == (
        B,
        Substatus.INITIAL_ASSIGNMENT,
    )
    assert done.registration.payload == {"welcome": "dev-1"}
    device = await world.store.get_hub_device(B, "dev-1")
    assert device is not None and (device.tags, device.desired) == ({"by": "webhook"}, {"x": 1})
    assert hook.requests[0]["deviceRuntimeContext"]["payload"] == {"model": "m1"}
    assert hook.requests[0]["linkedHubs"] == [A, B]


async def test_webhook_sees_the_current_hub_on_re_registration(world: World, hook: Hook) -> None:
    await world.add_group("grp-1")
    first = await world.register("dev-1", world.group_credential("dev-1"))
    await world.settle()
    hook.answer = {"iotHubHostName": A}
    second = await world.register("dev-1", world.group_credential("dev-1"))
    await world.settle()
    context = hook.requests[1]["deviceRuntimeContext"]
    assert (context["currentIotHubHostName"], context["currentDeviceId"]) == (B, "dev-1")
    done = await world.poll("dev-1", second.operation_id, world.group_credential("dev-1"))
    assert (
        done.registration is not None
        and done.registration.substatus is Substatus.DEVICE_DATA_MIGRATED
    )
    assert await world.store.get_hub_device(B, "dev-1") is None
    assert first.operation_id != second.operation_id


@pytest.mark.parametrize(
    "setup, code",
    [
        ({"status": 500}, CUSTOM_ALLOCATION_FAILED),
        ({"delay": 2.0}, CUSTOM_ALLOCATION_TIMEOUT),
        ({"answer": {"iotHubHostName": "rogue.example.net"}}, NO_HUB),
    ],
    ids=["http-500", "slow", "hub-not-linked"],
)
async def test_webhook_failures_end_the_operation_failed(
    world: World, hook: Hook, setup: dict[str, Any], code: int
) -> None:
    for name, value in setup.items():
        setattr(hook, name, value)
    await world.add_individual("dev-1")
    first = await world.register("dev-1")
    await world.settle()
    done = await world.poll("dev-1", first.operation_id)
    assert done.status is RegistrationStatus.FAILED and done.registration is not None
    assert done.registration.error_code == code
    state = await world.store.get_registration_state(world.instance.id, "dev-1")
    assert (
        state is not None and state.status is RegistrationStatus.FAILED and state.error_code == code
    )


async def test_custom_policy_without_an_allocator_fails_cleanly(world: World, hook: Hook) -> None:
    world.use()  # no CustomAllocator wired
    await world.add_individual("dev-1")
    first = await world.register("dev-1")
    await world.settle()
    done = await world.poll("dev-1", first.operation_id)
    assert (
        done.registration is not None and done.registration.error_code == CUSTOM_ALLOCATION_FAILED
    )
    assert hook.requests == []


async def test_keeping_the_current_hub_needs_no_webhook(world: World, hook: Hook) -> None:
    await world.add_individual(
        "dev-1", symmetric_spec(reprovision_policy=ReprovisionPolicy(update_hub_assignment=False))
    )
    await world.register("dev-1")
    await world.settle()
    second = await world.register("dev-1")
    assert second.status is RegistrationStatus.ASSIGNED  # answered at once, on its current hub
    assert len(hook.requests) == 1
