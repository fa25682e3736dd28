"""Linked hubs (limits, masking, tenant rules) and access policies (keys, rights, last owner)."""

from __future__ import annotations

from dataclasses import replace

from tests.integration.admin_api.conftest import AdminClient, policy_headers

from opendps.model.errors import (
    ACCESS_POLICY_NOT_FOUND,
    ALREADY_EXISTS,
    CONFLICT,
    ETAG_MISMATCH,
    INVALID_BODY,
    INVALID_ID,
    LINKED_HUB_NOT_FOUND,
    QUOTA_EXCEEDED,
    UNAUTHORIZED,
)
from opendps.model.hub import MAX_LINKED_HUBS
from opendps.model.instance import OWNER_POLICY_NAME

HUBS = "/instances/default/hubs"
POLICIES = "/instances/default/policies"


async def test_hub_is_added_listed_shown_updated_and_deleted(admin: AdminClient) -> None:
    added = await admin.ok("POST", HUBS, status=201, json={
        "hostName": "Hub-2.Example.Net", "allocationWeight": 3, "location": "westeurope"})  # fmt: skip
    assert (added["hostName"], added["kind"], added["allocationWeight"]) == (
        "hub-2.example.net",
        "builtin",
        3,
    )
    assert added["applyAllocationPolicy"] is True
    listed = await admin.ok("GET", HUBS)
    assert sorted(h["hostName"] for h in listed["value"]) == [
        "default.builtin-hub.localhost",
        "hub-2.example.net",
    ]
    assert (await admin.ok("GET", HUBS + "/HUB-2.example.net"))["location"] == "westeurope"
    updated = await admin.ok("PATCH", HUBS + "/hub-2.example.net", json={
        "allocationWeight": 5, "applyAllocationPolicy": False})  # fmt: skip
    assert (updated["allocationWeight"], updated["applyAllocationPolicy"], updated["location"]) == (
        5,
        False,
        "westeurope",
    )
    cleared = await admin.ok("PATCH", HUBS + "/hub-2.example.net", json={"location": None})
    assert (cleared["location"], cleared["allocationWeight"]) == (None, 5)
    await admin.ok("DELETE", HUBS + "/hub-2.example.net", status=204)
    await admin.error("GET", HUBS + "/hub-2.example.net", LINKED_HUB_NOT_FOUND)
    await admin.error("DELETE", HUBS + "/hub-2.example.net", LINKED_HUB_NOT_FOUND)


async def test_hub_update_honours_if_match(admin: AdminClient) -> None:
    added = await admin.ok("POST", HUBS, json={"hostName": "hub-2.example.net"}, status=201)
    stale = {**admin.admin_headers, "If-Match": '"stale"'}
    await admin.error(
        "PATCH",
        HUBS + "/hub-2.example.net",
        ETAG_MISMATCH,
        json={"allocationWeight": 2},
        headers=stale,
    )
    fresh = {**admin.admin_headers, "If-Match": added["etag"]}
    await admin.ok(
        "PATCH", HUBS + "/hub-2.example.net", json={"allocationWeight": 2}, headers=fresh
    )


async def test_invalid_hubs_are_refused(admin: AdminClient) -> None:
    await admin.error(
        "POST", HUBS, INVALID_BODY, json={"hostName": "hub.example", "allocationWeight": 0}
    )
    await admin.error("POST", HUBS, INVALID_BODY, json={"hostName": "hub.example", "kind": "azure"})
    await admin.error("POST", HUBS, INVALID_ID, json={"hostName": "not a host"})
    await admin.error(
        "POST", HUBS, ALREADY_EXISTS, json={"hostName": "default.builtin-hub.localhost"}
    )


async def test_builtin_hub_of_another_instance_cannot_be_linked(admin: AdminClient) -> None:
    await admin.ok("POST", "/instances", json={"name": "contoso"}, status=201)
    await admin.error(
        "POST", HUBS, ALREADY_EXISTS, json={"hostName": "contoso.builtin-hub.localhost"}
    )


async def test_an_instance_links_at_most_50_hubs(admin: AdminClient) -> None:
    for number in range(MAX_LINKED_HUBS - 1):  # the built-in hub is the first
        await admin.ok("POST", HUBS, json={"hostName": f"hub-{number}.example.net"}, status=201)
    await admin.error("POST", HUBS, QUOTA_EXCEEDED, json={"hostName": "one-too-many.example.net"})


async def test_hub_credentials_are_masked(admin: AdminClient) -> None:
    instance = await admin.instance("default")
    hub = await admin.context.store.get_linked_hub(instance.id, "default.builtin-hub.localhost")
    assert hub is not None
    await admin.context.store.put_linked_hub(
        replace(
            hub, connection={"sharedAccessKey": "c2VjcmV0LWtleQ==", "policyName": "iothubowner"}
        )
    )
    shown = await admin.ok("GET", HUBS + "/default.builtin-hub.localhost")
    assert shown["connection"] == {"sharedAccessKey": "***", "policyName": "iothubowner"}


async def test_policy_is_created_listed_without_keys_and_shown_with_them(
    admin: AdminClient,
) -> None:
    created = await admin.ok("POST", POLICIES, status=201, json={
        "name": "enroller", "rights": ["EnrollmentRead", "enrollmentwrite"]})  # fmt: skip
    assert created["rights"] == ["EnrollmentRead", "EnrollmentWrite"]
    assert created["primaryConnectionString"].startswith(
        "HostName=localhost;SharedAccessKeyName=enroller;"
    )
    listed = await admin.ok("GET", POLICIES)
    assert {"name": "enroller", "rights": ["EnrollmentRead", "EnrollmentWrite"]} in listed["value"]
    assert all("primaryKey" not in p for p in listed["value"])
    shown = await admin.ok("GET", POLICIES + "/enroller")
    assert shown["primaryKey"] == created["primaryKey"]
    await admin.error(
        "POST", POLICIES, ALREADY_EXISTS, json={"name": "Enroller", "rights": ["EnrollmentRead"]}
    )
    await admin.error("GET", POLICIES + "/nobody", ACCESS_POLICY_NOT_FOUND)


async def test_policy_with_given_keys_and_invalid_policies(admin: AdminClient) -> None:
    key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    created = await admin.ok("POST", POLICIES, status=201, json={
        "name": "given", "rights": ["ServiceConfig"], "primaryKey": key})  # fmt: skip
    assert created["primaryKey"] == key and created["secondaryKey"] != key
    body = await admin.error("POST", POLICIES, INVALID_BODY, json={
        "name": "short", "rights": ["ServiceConfig"], "primaryKey": "c2hvcnQ="})  # fmt: skip
    assert "c2hvcnQ=" not in body["message"]
    await admin.error("POST", POLICIES, INVALID_BODY, json={"name": "x", "rights": ["Everything"]})
    await admin.error("POST", POLICIES, INVALID_BODY, json={"name": "x", "rights": []})


async def test_regenerated_key_replaces_the_old_one(admin: AdminClient) -> None:
    before = await admin.ok("GET", POLICIES + "/" + OWNER_POLICY_NAME)
    after = await admin.ok(
        "POST", POLICIES + f"/{OWNER_POLICY_NAME}/regenerate-key", json={"key": "secondary"}
    )
    assert after["primaryKey"] == before["primaryKey"]
    assert after["secondaryKey"] != before["secondaryKey"]
    await admin.error("GET", "/instances", UNAUTHORIZED, headers=policy_headers(
        "localhost", OWNER_POLICY_NAME, before["secondaryKey"]))  # fmt: skip
    await admin.ok(
        "GET",
        "/instances",
        headers=policy_headers("localhost", OWNER_POLICY_NAME, after["secondaryKey"]),
    )
    await admin.error(
        "POST",
        POLICIES + f"/{OWNER_POLICY_NAME}/regenerate-key",
        INVALID_BODY,
        json={"key": "both"},
    )


async def test_last_service_config_policy_cannot_be_deleted(admin: AdminClient) -> None:
    await admin.error("DELETE", POLICIES + "/" + OWNER_POLICY_NAME, CONFLICT)
    await admin.ok(
        "POST", POLICIES, json={"name": "reader", "rights": ["EnrollmentRead"]}, status=201
    )
    await admin.ok("DELETE", POLICIES + "/reader", status=204)
    await admin.ok(
        "POST", POLICIES, json={"name": "operator", "rights": ["ServiceConfig"]}, status=201
    )
    await admin.ok("DELETE", POLICIES + "/" + OWNER_POLICY_NAME, status=204)
    await admin.error("DELETE", POLICIES + "/operator", CONFLICT)
    await admin.error("DELETE", POLICIES + "/" + OWNER_POLICY_NAME, ACCESS_POLICY_NOT_FOUND)
