"""Instances: create (ID scope, owner policy, built-in hub), list, show, delete, allocation policy."""

from __future__ import annotations

import re

from tests.integration.admin_api.conftest import API, AdminClient, policy_headers

from opendps.model.errors import (
    ALREADY_EXISTS,
    CONFLICT,
    ETAG_MISMATCH,
    INSTANCE_NOT_FOUND,
    INVALID_BODY,
    INVALID_ID,
    UNAUTHORIZED,
)
from opendps.model.instance import OWNER_POLICY_NAME


async def test_created_instance_has_an_id_scope_owner_keys_and_a_builtin_hub(
    admin: AdminClient,
) -> None:
    created = await admin.ok("POST", "/instances", json={"name": "contoso"}, status=201)
    assert re.fullmatch(r"0ne[0-9A-F]{8}", created["idScope"])
    assert created["serviceHostName"] == "contoso.localhost"
    assert created["allocationPolicy"] == "hashed"
    assert [hub["hostName"] for hub in created["hubs"]] == ["contoso.builtin-hub.localhost"]
    owner = created["ownerPolicy"]
    assert owner["name"] == OWNER_POLICY_NAME
    assert set(owner["rights"]) == {
        "ServiceConfig", "EnrollmentRead", "EnrollmentWrite", "DeviceConnect",
        "RegistrationStatusRead", "RegistrationStatusWrite",
    }  # fmt: skip
    assert len(owner["primaryKey"]) == 88 and owner["primaryKey"] != owner["secondaryKey"]
    assert owner["primaryConnectionString"] == (
        f"HostName=contoso.localhost;SharedAccessKeyName={OWNER_POLICY_NAME};SharedAccessKey={owner['primaryKey']}"
    )
    default = await admin.ok("GET", "/instances/default")
    assert default["idScope"] != created["idScope"]


async def test_owner_key_of_a_new_instance_works_on_the_service_api_of_that_instance_only(
    admin: AdminClient,
) -> None:
    created = await admin.ok("POST", "/instances", json={"name": "contoso"}, status=201)
    headers = policy_headers(
        "contoso.localhost", OWNER_POLICY_NAME, created["ownerPolicy"]["primaryKey"]
    )
    body = {
        "registrationId": "sensor-1",
        "attestation": {"type": "symmetricKey", "symmetricKey": {}},
    }
    response = await admin.http.put(f"/enrollments/sensor-1?{API}", json=body, headers=headers)
    assert response.status == 200, await response.text()
    contoso = await admin.instance("contoso")
    default = await admin.instance("default")
    assert await admin.context.store.get_individual_enrollment(contoso.id, "sensor-1") is not None
    assert await admin.context.store.get_individual_enrollment(default.id, "sensor-1") is None
    # The same key addressed at the default instance's host is someone else's key there.
    other = policy_headers("localhost", OWNER_POLICY_NAME, created["ownerPolicy"]["primaryKey"])
    response = await admin.http.get(f"/enrollments/sensor-1?{API}", headers=other)
    assert response.status == 401


async def test_instance_names_are_unique_case_insensitively(admin: AdminClient) -> None:
    await admin.ok("POST", "/instances", json={"name": "contoso"}, status=201)
    await admin.error("POST", "/instances", ALREADY_EXISTS, json={"name": "Contoso"})


async def test_service_host_name_can_be_chosen_but_not_shared(admin: AdminClient) -> None:
    created = await admin.ok(
        "POST",
        "/instances",
        json={"name": "contoso", "serviceHostName": "DPS.Contoso.Example"},
        status=201,
    )
    assert created["serviceHostName"] == "dps.contoso.example"
    await admin.error(
        "POST",
        "/instances",
        ALREADY_EXISTS,
        json={"name": "fabrikam", "serviceHostName": "dps.contoso.example"},
    )


async def test_invalid_names_and_bodies_are_refused(admin: AdminClient) -> None:
    await admin.error("POST", "/instances", INVALID_ID, json={"name": "-bad"})
    await admin.error("POST", "/instances", INVALID_BODY, json={"name": "ok", "unknown": 1})
    await admin.error(
        "POST", "/instances", INVALID_BODY, json={"name": "ok", "allocationPolicy": "random"}
    )
    await admin.error("POST", "/instances", INVALID_BODY, data=b"{not json", headers={
        **admin.admin_headers, "Content-Type": "application/json"})  # fmt: skip
    await admin.error(
        "POST", "/instances", INVALID_ID, json={"name": "ok", "serviceHostName": "not a host"}
    )


async def test_show_counts_what_the_instance_holds(admin: AdminClient) -> None:
    await admin.ok("POST", "/instances", json={"name": "contoso"}, status=201)
    await admin.ok(
        "POST", "/instances/contoso/hubs", json={"hostName": "hub-2.contoso.localhost"}, status=201
    )
    shown = await admin.ok("GET", "/instances/contoso")
    assert shown["counts"] == {
        "individualEnrollments": 0, "enrollmentGroups": 0, "linkedHubs": 2,
        "caCertificates": 0, "accessPolicies": 1,
    }  # fmt: skip
    assert "ownerPolicy" not in shown
    await admin.error("GET", "/instances/nowhere", INSTANCE_NOT_FOUND)


async def test_deleted_instance_is_gone_with_its_policies(admin: AdminClient) -> None:
    created = await admin.ok("POST", "/instances", json={"name": "contoso"}, status=201)
    await admin.ok("DELETE", "/instances/contoso", status=204)
    await admin.error("GET", "/instances/contoso", INSTANCE_NOT_FOUND)
    await admin.error("DELETE", "/instances/contoso", INSTANCE_NOT_FOUND)
    headers = policy_headers(
        "contoso.localhost", OWNER_POLICY_NAME, created["ownerPolicy"]["primaryKey"]
    )
    await admin.error("GET", "/instances", UNAUTHORIZED, headers=headers)


async def test_default_instance_cannot_be_deleted(admin: AdminClient) -> None:
    await admin.error("DELETE", "/instances/default", CONFLICT)


async def test_allocation_policy_is_set_and_shown_with_its_webhook(admin: AdminClient) -> None:
    assert await admin.ok("GET", "/instances/default/allocation-policy") == {
        "allocationPolicy": "hashed", "customAllocationDefinition": None,
    }  # fmt: skip
    custom = {
        "allocationPolicy": "custom",
        "customAllocationDefinition": {
            "webhookUrl": "https://alloc.example/api",
            "apiVersion": "2021-10-01",
        },
    }
    assert await admin.ok("PUT", "/instances/default/allocation-policy", json=custom) == custom
    assert (await admin.ok("GET", "/instances/default"))["allocationPolicy"] == "custom"
    static = await admin.ok(
        "PUT", "/instances/default/allocation-policy", json={"allocationPolicy": "static"}
    )
    assert static == {"allocationPolicy": "static", "customAllocationDefinition": None}


async def test_allocation_policy_rules_and_etags(admin: AdminClient) -> None:
    path = "/instances/default/allocation-policy"
    await admin.error("PUT", path, INVALID_BODY, json={"allocationPolicy": "custom"})
    await admin.error("PUT", path, INVALID_BODY, json={
        "allocationPolicy": "hashed",
        "customAllocationDefinition": {"webhookUrl": "https://a.example", "apiVersion": "2021-10-01"}})  # fmt: skip
    response = await admin.call("GET", path)
    etag = response.headers["ETag"]
    stale = {**admin.admin_headers, "If-Match": '"stale"'}
    await admin.error(
        "PUT", path, ETAG_MISMATCH, json={"allocationPolicy": "geoLatency"}, headers=stale
    )
    fresh = {**admin.admin_headers, "If-Match": etag}
    assert (await admin.ok("PUT", path, json={"allocationPolicy": "geoLatency"}, headers=fresh))[
        "allocationPolicy"
    ] == "geoLatency"
