"""Saving a custom allocation webhook makes one dry-run call; its failure is a warning."""

from __future__ import annotations

from typing import Any

from tests.integration.admin_api.conftest import API, AdminClient
from tests.integration.provisioning_tools.conftest import Webhook, owner_headers

from opendps.allocation.custom import WebhookAllocator
from opendps.service_api.webhook_check import WARNING_HEADER

BUILTIN = "default.builtin-hub.localhost"
POLICY = "/instances/default/allocation-policy"
KEY = "a2V5LW9uZS1rZXktb25lLWtleQ=="


def _custom_policy(url: str) -> dict[str, Any]:
    return {
        "allocationPolicy": "custom",
        "customAllocationDefinition": {"webhookUrl": url, "apiVersion": "2021-10-01"},
    }


def _group(url: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "enrollmentGroupId": "g1",
        "attestation": {
            "type": "symmetricKey",
            "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY},
        },
    }
    if url is not None:
        body.update(_custom_policy(url))
    return body


async def test_an_instance_webhook_answering_401_is_saved_with_a_warning(
    admin: AdminClient, webhook: Webhook, allocator: WebhookAllocator
) -> None:
    webhook.answer = lambda body: (401, {})
    saved = await admin.ok("PUT", POLICY, json=_custom_policy(webhook.url))
    assert saved["allocationPolicy"] == "custom"
    [warning] = saved["warnings"]
    assert "HTTP 401" in warning and "500210" in warning
    assert "function-key" not in warning
    assert webhook.dry_run_headers == ["true"]
    assert webhook.received[0]["linkedHubs"] == [BUILTIN]
    assert (await admin.ok("GET", POLICY))["allocationPolicy"] == "custom"


async def test_a_healthy_instance_webhook_is_saved_without_warnings(
    admin: AdminClient, webhook: Webhook, allocator: WebhookAllocator
) -> None:
    saved = await admin.ok("PUT", POLICY, json=_custom_policy(webhook.url))
    assert "warnings" not in saved
    assert len(webhook.received) == 1


async def test_a_webhook_choosing_an_unlinked_hub_is_a_warning(
    admin: AdminClient, webhook: Webhook, allocator: WebhookAllocator
) -> None:
    webhook.answer = lambda body: (200, {"iotHubHostName": "elsewhere.example.net"})
    saved = await admin.ok("PUT", POLICY, json=_custom_policy(webhook.url))
    assert "not a linked hub" in saved["warnings"][0]


async def test_a_group_with_a_failing_webhook_is_saved_and_the_warning_is_a_header(
    admin: AdminClient, webhook: Webhook, allocator: WebhookAllocator
) -> None:
    webhook.answer = lambda body: (500, {})
    headers = await owner_headers(admin)
    response = await admin.http.put(
        f"/enrollmentGroups/g1?{API}", json=_group(webhook.url), headers=headers
    )
    body = await response.json()
    assert response.status == 200, body
    assert "HTTP 500" in response.headers[WARNING_HEADER]
    # The body is exactly Azure's shape: no warning inside.
    assert body["enrollmentGroupId"] == "g1"
    assert "warning" not in str(body).lower()
    assert webhook.dry_run_headers == ["true"]
    assert webhook.received[0]["enrollmentGroup"]["enrollmentGroupId"] == "g1"
    instance = await admin.instance("default")
    assert await admin.context.store.get_enrollment_group(instance.id, "g1") is not None


async def test_an_individual_enrollment_with_a_healthy_webhook_gets_no_warning(
    admin: AdminClient, webhook: Webhook, allocator: WebhookAllocator
) -> None:
    headers = await owner_headers(admin)
    body = {
        "registrationId": "dev-1",
        "attestation": {
            "type": "symmetricKey",
            "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY},
        },
        **_custom_policy(webhook.url),
    }
    response = await admin.http.put(f"/enrollments/dev-1?{API}", json=body, headers=headers)
    assert response.status == 200, await response.text()
    assert WARNING_HEADER not in response.headers
    [request] = webhook.received
    assert request["deviceRuntimeContext"]["registrationId"] == "dev-1"
    assert request["individualEnrollment"]["registrationId"] == "dev-1"


async def test_an_enrollment_without_custom_allocation_calls_no_webhook(
    admin: AdminClient, webhook: Webhook, allocator: WebhookAllocator
) -> None:
    headers = await owner_headers(admin)
    response = await admin.http.put(
        f"/enrollmentGroups/g1?{API}", json=_group(None), headers=headers
    )
    assert response.status == 200, await response.text()
    assert WARNING_HEADER not in response.headers
    assert webhook.received == []
