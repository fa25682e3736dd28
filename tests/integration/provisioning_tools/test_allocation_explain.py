"""`POST /admin/v1/instances/{instance}/allocation/explain`: the allocation dry run."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tests.integration.admin_api.conftest import AdminClient
from tests.integration.provisioning_tools.conftest import Webhook, owner_headers
from tests.storefixtures import sample_registration

from opendps.allocation.custom import WebhookAllocator
from opendps.allocation.select import select_hub
from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    CustomAllocationDefinition,
    EnrollmentGroup,
    EnrollmentSpec,
    IndividualEnrollment,
    ProvisioningStatus,
    ReprovisionPolicy,
    SymmetricKeyAttestation,
    X509Attestation,
    X509CaReferences,
)
from opendps.model.errors import INVALID_REGISTRATION_ID, UNAUTHORIZED
from opendps.model.hub import AllocationPolicy
from opendps.model.registration import Substatus

BUILTIN = "default.builtin-hub.localhost"
HUB_2 = "hub-2.builtin-hub.localhost"
EXPLAIN = "/instances/default/allocation/explain"
KEYS = SymmetricKeyAttestation("a2V5LW9uZS1rZXktb25lLWtleQ==", "a2V5LXR3by1rZXktdHdvLWtleQ==")
SYMMETRIC = Attestation(AttestationType.SYMMETRIC_KEY, symmetric_key=KEYS)
TWIN = {"tags": {"site": "lyon"}, "properties": {"desired": {"interval": 5}}}


async def _link_hub_2(admin: AdminClient, **fields: Any) -> None:
    await admin.ok(
        "POST", "/instances/default/hubs", status=201, json={"hostName": HUB_2, **fields}
    )


async def _individual(admin: AdminClient, registration_id: str, **spec: Any) -> None:
    instance = await admin.instance("default")
    enrollment = IndividualEnrollment(
        instance.id, registration_id, EnrollmentSpec(SYMMETRIC, **spec), etag='"e"'
    )
    await admin.context.store.put_individual_enrollment(enrollment, if_match=None)


async def _group(
    admin: AdminClient, group_id: str, attestation: Attestation = SYMMETRIC, **spec: Any
) -> None:
    instance = await admin.instance("default")
    group = EnrollmentGroup(instance.id, group_id, EnrollmentSpec(attestation, **spec), etag='"g"')
    await admin.context.store.put_enrollment_group(group, if_match=None)


async def _explain(admin: AdminClient, registration_id: str, **body: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await admin.ok(
        "POST", EXPLAIN, json={"registrationId": registration_id, **body}
    )
    assert answer["dryRun"] is True
    return answer


async def _nothing_registered(admin: AdminClient, registration_id: str) -> None:
    instance = await admin.instance("default")
    store = admin.context.store
    assert await store.get_registration_state(instance.id, registration_id) is None
    for hub in (BUILTIN, HUB_2):
        assert await store.get_hub_device(hub, registration_id) is None


async def test_an_individual_enrollment_decides_alone_and_gets_the_hashed_hub_the_engine_picks(
    admin: AdminClient,
) -> None:
    await _link_hub_2(admin, allocationWeight=3)
    await _individual(admin, "dev-1", initial_twin=TWIN)
    await _group(admin, "some-group")
    answer = await _explain(admin, "dev-1")
    [decision] = answer["decisions"]
    assert (decision["enrollmentKind"], decision["enrollmentId"]) == (
        "individualEnrollment",
        "dev-1",
    )
    assert (decision["allocationPolicy"], decision["policySource"]) == ("hashed", "instance")
    assert {(h["hostName"], h["allocationWeight"], h["candidate"]) for h in decision["hubs"]} == {
        (BUILTIN, 1, True),
        (HUB_2, 3, True),
    }
    instance = await admin.instance("default")
    linked = await admin.context.store.list_linked_hubs(instance.id)
    expected = select_hub(AllocationPolicy.HASHED, linked, "dev-1").host_name
    assert (decision["outcome"], decision["assignedHub"], decision["deviceId"]) == (
        "assigned",
        expected,
        "dev-1",
    )
    assert "hashed" in decision["reason"] and "weight" in decision["reason"]
    assert decision["initialTwin"] == TWIN
    assert decision["reprovisioning"]["substatus"] == "initialAssignment"
    assert "individual enrollment" in answer["summary"].lower()
    assert answer["previousRegistration"] is None
    await _nothing_registered(admin, "dev-1")


async def test_without_an_individual_enrollment_every_group_is_explained_and_the_credential_decides(
    admin: AdminClient,
) -> None:
    await _group(admin, "keys")
    x509 = Attestation(
        AttestationType.X509, x509=X509Attestation(ca_references=X509CaReferences("ca-1"))
    )
    await _group(admin, "certs", x509)
    answer = await _explain(admin, "dev-2")
    decisions = {d["enrollmentId"]: d for d in answer["decisions"]}
    assert set(decisions) == {"keys", "certs"}
    assert "key decides" in decisions["keys"]["matchedBy"]
    assert "certificate chain decides" in decisions["certs"]["matchedBy"]
    assert all(d["assignedHub"] == BUILTIN for d in decisions.values())
    assert "2 enrollment groups" in answer["summary"]


async def test_a_device_no_enrollment_can_take_would_be_refused(admin: AdminClient) -> None:
    answer = await _explain(admin, "stranger")
    assert answer["decisions"] == []
    assert "401" in answer["summary"]


async def test_a_hub_that_does_not_apply_the_instance_policy_is_not_a_candidate(
    admin: AdminClient,
) -> None:
    await _link_hub_2(admin, allocationWeight=1000, applyAllocationPolicy=False)
    await _individual(admin, "dev-3")
    [decision] = (await _explain(admin, "dev-3"))["decisions"]
    candidates = {h["hostName"]: h["candidate"] for h in decision["hubs"]}
    assert candidates == {BUILTIN: True, HUB_2: False}
    assert decision["assignedHub"] == BUILTIN


async def test_an_enrollment_policy_overrides_the_instance_policy(admin: AdminClient) -> None:
    await _link_hub_2(admin)
    await _individual(admin, "dev-4", allocation_policy=AllocationPolicy.STATIC, iot_hubs=(HUB_2,))
    [decision] = (await _explain(admin, "dev-4"))["decisions"]
    assert (decision["allocationPolicy"], decision["policySource"]) == ("static", "enrollment")
    assert decision["assignedHub"] == HUB_2
    assert "static" in decision["reason"]


async def test_a_disabled_enrollment_would_be_answered_disabled(admin: AdminClient) -> None:
    await _individual(admin, "dev-5", provisioning_status=ProvisioningStatus.DISABLED)
    [decision] = (await _explain(admin, "dev-5"))["decisions"]
    assert (decision["outcome"], decision["assignedHub"]) == ("disabled", None)


async def test_a_previous_registration_shows_what_reprovisioning_would_do(
    admin: AdminClient,
) -> None:
    await _link_hub_2(admin)
    await _individual(
        admin, "dev-6", allocation_policy=AllocationPolicy.STATIC, iot_hubs=(BUILTIN,)
    )
    instance = await admin.instance("default")
    previous = replace(
        sample_registration(instance.id, "dev-6"),
        assigned_hub=HUB_2,
        device_id="dev-6",
        substatus=Substatus.INITIAL_ASSIGNMENT,
    )
    await admin.context.store.put_registration_state(previous)
    answer = await _explain(admin, "dev-6")
    assert answer["previousRegistration"]["assignedHub"] == HUB_2
    [decision] = answer["decisions"]
    assert decision["assignedHub"] == BUILTIN
    assert decision["reprovisioning"] == {
        "substatus": "deviceDataMigrated",
        "twin": "migrate",
        "removesFromHub": HUB_2,
        "removesDeviceId": "dev-6",
    }


async def test_a_device_that_must_keep_its_hub_keeps_it(admin: AdminClient) -> None:
    await _link_hub_2(admin)
    keep = ReprovisionPolicy(update_hub_assignment=False, migrate_device_data=False)
    await _individual(
        admin,
        "dev-7",
        allocation_policy=AllocationPolicy.STATIC,
        iot_hubs=(BUILTIN,),
        reprovision_policy=keep,
    )
    instance = await admin.instance("default")
    previous = replace(
        sample_registration(instance.id, "dev-7"), assigned_hub=HUB_2, device_id="dev-7"
    )
    await admin.context.store.put_registration_state(previous)
    [decision] = (await _explain(admin, "dev-7"))["decisions"]
    assert decision["assignedHub"] == HUB_2
    assert "keeps its current hub" in decision["reason"]
    assert decision["reprovisioning"]["twin"] == "keep"


async def test_custom_allocation_shows_the_webhooks_answer_to_a_dry_run_request(
    admin: AdminClient, webhook: Webhook, allocator: WebhookAllocator
) -> None:
    await _link_hub_2(admin)
    webhook_twin = {"tags": {"from": "webhook"}}
    webhook.answer = lambda body: (
        200,
        {
            "iotHubHostName": HUB_2,
            "initialTwin": webhook_twin,
            "payload": {"echo": body["deviceRuntimeContext"]["payload"]},
        },
    )
    custom = CustomAllocationDefinition(webhook.url, "2021-10-01")
    await _individual(
        admin, "dev-8", allocation_policy=AllocationPolicy.CUSTOM, custom_allocation=custom
    )
    [decision] = (await _explain(admin, "dev-8", payload={"model": "x1"}))["decisions"]
    assert webhook.dry_run_headers == ["true"]
    [request] = webhook.received
    assert request["deviceRuntimeContext"]["registrationId"] == "dev-8"
    assert request["deviceRuntimeContext"]["payload"] == {"model": "x1"}
    assert decision["webhook"]["iotHubHostName"] == HUB_2
    assert decision["webhook"]["payload"] == {"echo": {"model": "x1"}}
    assert (decision["outcome"], decision["assignedHub"]) == ("assigned", HUB_2)
    assert decision["initialTwin"] == webhook_twin
    await _nothing_registered(admin, "dev-8")


async def test_a_failing_webhook_is_explained_as_the_failure_a_device_would_meet(
    admin: AdminClient, webhook: Webhook, allocator: WebhookAllocator
) -> None:
    webhook.answer = lambda body: (401, {"error": "missing function key"})
    custom = CustomAllocationDefinition(webhook.url, "2021-10-01")
    await _individual(
        admin, "dev-9", allocation_policy=AllocationPolicy.CUSTOM, custom_allocation=custom
    )
    [decision] = (await _explain(admin, "dev-9"))["decisions"]
    assert (decision["outcome"], decision["errorCode"]) == ("failed", 500210)
    assert "HTTP 401" in decision["webhook"]["errorMessage"]
    assert "function-key" not in str(decision)


async def test_an_access_policy_with_service_config_may_explain_its_own_instance(
    admin: AdminClient,
) -> None:
    await _individual(admin, "dev-10")
    headers = await owner_headers(admin)
    answer = await admin.ok("POST", EXPLAIN, json={"registrationId": "dev-10"}, headers=headers)
    assert answer["decisions"][0]["assignedHub"] == BUILTIN
    await admin.ok("POST", "/instances", status=201, json={"name": "other"})
    await admin.error(
        "POST",
        "/instances/other/allocation/explain",
        UNAUTHORIZED,
        json={"registrationId": "dev-10"},
        headers=headers,
    )


async def test_an_invalid_registration_id_is_refused(admin: AdminClient) -> None:
    await admin.error("POST", EXPLAIN, INVALID_REGISTRATION_ID, json={"registrationId": "bad id!"})
