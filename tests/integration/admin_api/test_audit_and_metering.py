"""Every admin change is audited (without secrets) and metered per instance and day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.admin_api.conftest import ADMIN_KEY, AdminClient, issue, policy_headers

from opendps.model.errors import BAD_REQUEST, UNAUTHORIZED
from opendps.model.instance import OWNER_POLICY_NAME


async def _every_kind_of_change(admin: AdminClient) -> dict[str, Any]:
    created = await admin.ok("POST", "/instances", json={"name": "contoso"}, status=201)
    base = "/instances/contoso"
    await admin.ok("POST", base + "/hubs", json={"hostName": "hub-2.example.net"}, status=201)
    await admin.ok("PATCH", base + "/hubs/hub-2.example.net", json={"allocationWeight": 2})
    await admin.ok("DELETE", base + "/hubs/hub-2.example.net", status=204)
    await admin.ok("PUT", base + "/allocation-policy", json={"allocationPolicy": "static"})
    policy = await admin.ok(
        "POST", base + "/policies", json={"name": "ops", "rights": ["ServiceConfig"]}, status=201
    )
    await admin.ok("POST", base + "/policies/ops/regenerate-key", json={"key": "primary"})
    ca = issue("Audit CA")
    await admin.ok(
        "POST", base + "/certificates", json={"name": "root", "certificate": ca.pem}, status=201
    )
    code = await admin.ok("POST", base + "/certificates/root/generate-verification-code")
    await admin.ok("POST", base + "/certificates/root/verify", json={
        "certificate": issue(code["verificationCode"], issuer=ca).pem})  # fmt: skip
    await admin.ok("DELETE", base + "/certificates/root", status=204)
    await admin.ok("DELETE", base + "/policies/ops", status=204)
    return {"created": created, "policy": policy}


async def test_every_change_is_audited_newest_first(admin: AdminClient) -> None:
    await _every_kind_of_change(admin)
    page = await admin.ok("GET", "/audit?instance=contoso")
    actions = [entry["action"] for entry in page["value"]]
    assert actions == [
        "policy.delete", "certificate.delete", "certificate.verify",
        "certificate.generate-verification-code", "certificate.create",
        "policy.regenerate-primary-key", "policy.create", "allocation-policy.set",
        "hub.delete", "hub.update", "hub.add", "instance.create",
    ]  # fmt: skip
    assert {entry["actor"] for entry in page["value"]} == {"admin"}
    assert {entry["instance"] for entry in page["value"]} == {"contoso"}
    assert page["value"][0]["target"] == "policies/ops"


async def test_audit_entries_carry_no_secret(admin: AdminClient) -> None:
    changes = await _every_kind_of_change(admin)
    page = await admin.ok("GET", "/audit?limit=1000")
    text = repr(page)
    secrets = [
        ADMIN_KEY,
        changes["created"]["ownerPolicy"]["primaryKey"],
        changes["created"]["ownerPolicy"]["secondaryKey"],
        changes["policy"]["primaryKey"],
        changes["policy"]["secondaryKey"],
    ]
    assert not [secret for secret in secrets if secret in text]


async def test_policy_callers_are_audited_by_name_and_see_their_instance_only(
    admin: AdminClient,
) -> None:
    created = await admin.ok("POST", "/instances", json={"name": "contoso"}, status=201)
    headers = policy_headers(
        "contoso.localhost", OWNER_POLICY_NAME, created["ownerPolicy"]["primaryKey"]
    )
    await admin.ok(
        "POST",
        "/instances/contoso/hubs",
        json={"hostName": "hub-9.example.net"},
        status=201,
        headers=headers,
    )
    await admin.ok(
        "POST", "/instances/default/hubs", json={"hostName": "hub-8.example.net"}, status=201
    )
    own = await admin.ok("GET", "/audit", headers=headers)
    assert [(e["actor"], e["action"], e["instance"]) for e in own["value"]] == [
        (OWNER_POLICY_NAME, "hub.add", "contoso"),
        ("admin", "instance.create", "contoso"),
    ]
    await admin.error("GET", "/audit?instance=default", UNAUTHORIZED, headers=headers)


async def test_audit_pages_backwards_with_before(admin: AdminClient) -> None:
    for number in range(5):
        await admin.ok(
            "POST",
            "/instances/default/hubs",
            json={"hostName": f"hub-{number}.example.net"},
            status=201,
        )
    first = await admin.ok("GET", "/audit?limit=2")
    second = await admin.ok("GET", f"/audit?limit=2&before={first['nextBefore']}")
    third = await admin.ok("GET", f"/audit?limit=2&before={second['nextBefore']}")
    targets = [e["target"] for page in (first, second, third) for e in page["value"]]
    assert targets == [f"hubs/hub-{number}.example.net" for number in (4, 3, 2, 1, 0)]
    assert third["nextBefore"] is None
    await admin.error("GET", "/audit?limit=0", BAD_REQUEST)
    await admin.error("GET", "/audit?before=abc", BAD_REQUEST)


async def test_deleted_instance_stays_in_the_audit_log(admin: AdminClient) -> None:
    await admin.ok("POST", "/instances", json={"name": "contoso"}, status=201)
    await admin.ok("DELETE", "/instances/contoso", status=204)
    page = await admin.ok("GET", "/audit")
    assert page["value"][0] | {"id": None, "at": None} == {
        "id": None, "at": None, "instance": None, "actor": "admin",
        "action": "instance.delete", "target": "instances/contoso",
    }  # fmt: skip


async def test_metering_counts_changes_per_day_and_kind(admin: AdminClient) -> None:
    await _every_kind_of_change(admin)
    metering = await admin.ok("GET", "/instances/contoso/metering")
    today = datetime.now(UTC).date().isoformat()
    assert metering["value"] == [
        {"day": today, "kind": "serviceOperation", "count": 12}
    ]  # the 12 audited changes
    assert metering["totals"] == {"serviceOperation": 12}
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    later = await admin.ok("GET", f"/instances/contoso/metering?since={tomorrow}")
    assert (later["value"], later["since"]) == ([], tomorrow)
    await admin.error("GET", "/instances/contoso/metering?since=yesterday", BAD_REQUEST)
