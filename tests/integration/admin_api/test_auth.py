"""Who may call the admin API: the admin key everywhere, a ServiceConfig policy on its instance."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from tests.integration.admin_api.conftest import AdminClient, policy_headers

from opendps.model.errors import RIGHT_MISSING, UNAUTHORIZED
from opendps.model.instance import OWNER_POLICY_NAME


async def _new_instance(admin: AdminClient, name: str) -> dict[str, object]:
    created: dict[str, object] = await admin.ok(
        "POST", "/instances", json={"name": name}, status=201
    )
    return created


async def test_admin_key_sees_every_instance(admin: AdminClient) -> None:
    await _new_instance(admin, "contoso")
    listed = await admin.ok("GET", "/instances")
    assert sorted(i["name"] for i in listed["value"]) == ["contoso", "default"]


async def test_missing_authorization_is_refused_with_401002(admin: AdminClient) -> None:
    body = await admin.error("GET", "/instances", UNAUTHORIZED, headers={"X-Nothing": "1"})
    assert "Authorization" in body["message"]


async def test_wrong_admin_key_is_refused_with_401002_without_echoing_it(
    admin: AdminClient,
) -> None:
    wrong = base64.b64encode(b"w" * 32).decode()
    body = await admin.error(
        "GET", "/instances", UNAUTHORIZED, headers={"Authorization": f"Bearer {wrong}"}
    )
    assert wrong not in body["message"]


async def test_empty_bearer_token_is_refused(admin: AdminClient) -> None:
    await admin.error("GET", "/instances", UNAUTHORIZED, headers={"Authorization": "Bearer "})


async def test_owner_policy_of_an_instance_manages_that_instance_only(admin: AdminClient) -> None:
    created = await _new_instance(admin, "contoso")
    owner = created["ownerPolicy"]
    assert isinstance(owner, dict)
    headers = policy_headers(
        str(created["serviceHostName"]), OWNER_POLICY_NAME, owner["primaryKey"]
    )
    listed = await admin.ok("GET", "/instances", headers=headers)
    assert [i["name"] for i in listed["value"]] == ["contoso"]
    await admin.ok("GET", "/instances/contoso/hubs", headers=headers)
    await admin.error("GET", "/instances/default/hubs", UNAUTHORIZED, headers=headers)
    # An instance that does not exist looks the same as another tenant's.
    await admin.error("GET", "/instances/nowhere/hubs", UNAUTHORIZED, headers=headers)


async def test_policy_cannot_create_or_delete_instances(admin: AdminClient) -> None:
    created = await _new_instance(admin, "contoso")
    owner = created["ownerPolicy"]
    assert isinstance(owner, dict)
    headers = policy_headers(
        str(created["serviceHostName"]), OWNER_POLICY_NAME, owner["primaryKey"]
    )
    await admin.error("POST", "/instances", RIGHT_MISSING, json={"name": "other"}, headers=headers)
    await admin.error("DELETE", "/instances/contoso", RIGHT_MISSING, headers=headers)


async def test_policy_without_service_config_is_refused_with_401003(admin: AdminClient) -> None:
    created = await _new_instance(admin, "contoso")
    reader = await admin.ok(
        "POST",
        "/instances/contoso/policies",
        json={"name": "reader", "rights": ["EnrollmentRead"]},
        status=201,
    )
    headers = policy_headers(str(created["serviceHostName"]), "reader", reader["primaryKey"])
    body = await admin.error("GET", "/instances/contoso/hubs", RIGHT_MISSING, headers=headers)
    assert "ServiceConfig" in body["message"]


async def test_policy_token_with_a_bad_key_is_refused_with_401002(admin: AdminClient) -> None:
    created = await _new_instance(admin, "contoso")
    bad_key = base64.b64encode(b"x" * 32).decode()
    headers = policy_headers(str(created["serviceHostName"]), OWNER_POLICY_NAME, bad_key)
    await admin.error("GET", "/instances/contoso/hubs", UNAUTHORIZED, headers=headers)


async def test_expired_policy_token_is_refused_with_401002(admin: AdminClient) -> None:
    created = await _new_instance(admin, "contoso")
    owner = created["ownerPolicy"]
    assert isinstance(owner, dict)
    long_ago = int(datetime.now(UTC).timestamp()) - 3600
    headers = policy_headers(
        str(created["serviceHostName"]), OWNER_POLICY_NAME, owner["primaryKey"], expiry=long_ago
    )
    await admin.error("GET", "/instances/contoso/hubs", UNAUTHORIZED, headers=headers)


async def test_openapi_document_needs_no_credentials(admin: AdminClient) -> None:
    response = await admin.http.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"] == "3.1.0"
