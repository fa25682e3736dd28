"""Bulk import: thousands of enrollments streamed, per-line errors, no 10-item limit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from tests.integration.admin_api.conftest import AdminClient, policy_headers
from tests.tpm_keys import EK_A

from opendps.model.enrollment import AttestationType
from opendps.model.errors import BODY_TOO_LARGE, INVALID_BODY, INVALID_REGISTRATION_ID
from opendps.model.instance import OWNER_POLICY_NAME

IMPORT = "/instances/default/enrollments/import"
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def _enrollment(registration_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "registrationId": registration_id,
        "attestation": {
            "type": "symmetricKey",
            "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY},
        },
        **extra,
    }


async def _chunked(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_5000_enrollments_import_as_a_stream(admin: AdminClient) -> None:
    lines = "\n".join(json.dumps(_enrollment(f"device-{n:05d}")) for n in range(5000)).encode()
    headers = {**admin.admin_headers, "Content-Type": "application/x-ndjson"}
    result = await admin.ok("POST", IMPORT, data=_chunked(lines, 7919), headers=headers)
    assert result == {"imported": 5000, "failed": 0, "errors": [], "errorsTruncated": False}
    default = await admin.instance("default")
    assert await admin.context.store.count_individual_enrollments(default.id) == 5000
    stored = await admin.context.store.get_individual_enrollment(default.id, "device-04999")
    assert stored is not None and stored.spec.attestation.type is AttestationType.SYMMETRIC_KEY
    audit = await admin.ok("GET", "/audit?limit=1")
    assert audit["value"][0]["action"] == "enrollment.import"
    assert KEY not in json.dumps(audit)
    metering = await admin.ok("GET", "/instances/default/metering")
    assert metering["totals"] == {"enrollmentChange": 5000}


async def test_json_array_imports_and_generates_missing_keys(admin: AdminClient) -> None:
    body = [
        _enrollment("sensor-1", deviceId="Sensor-One", initialTwin={"tags": {"room": 7}}),
        {"registrationId": "sensor-2", "attestation": {"type": "symmetricKey"}},
        {
            "registrationId": "sensor-3",
            "attestation": {"type": "tpm", "tpm": {"endorsementKey": EK_A}},
        },
    ]
    result = await admin.ok("POST", IMPORT, json=body)
    assert (result["imported"], result["failed"]) == (3, 0)
    default = await admin.instance("default")
    second = await admin.context.store.get_individual_enrollment(default.id, "sensor-2")
    assert second is not None and second.spec.attestation.symmetric_key is not None
    assert len(second.spec.attestation.symmetric_key.primary_key) == 88
    first = await admin.context.store.get_individual_enrollment(default.id, "sensor-1")
    assert first is not None and first.spec.initial_twin == {"tags": {"room": 7}}


async def test_bad_lines_are_reported_by_line_and_the_rest_is_imported(admin: AdminClient) -> None:
    lines = [
        json.dumps(_enrollment("good-1")),
        "{not json",
        json.dumps(_enrollment("-bad-id")),
        "",
        json.dumps(_enrollment("good-2", iotHubs=["unknown-hub.example.net"])),
        json.dumps(["not", "an", "object"]),
        json.dumps(_enrollment("good-3")),
    ]
    headers = {**admin.admin_headers, "Content-Type": "application/x-ndjson"}
    result = await admin.ok("POST", IMPORT, data="\n".join(lines).encode(), headers=headers)
    assert (result["imported"], result["failed"]) == (2, 4)
    assert [(e["line"], e["registrationId"], e["errorCode"]) for e in result["errors"]] == [
        (2, None, INVALID_BODY),
        (3, "-bad-id", INVALID_REGISTRATION_ID),
        (5, "good-2", INVALID_BODY),
        (6, None, INVALID_BODY),
    ]
    assert "unknown-hub.example.net" in result["errors"][2]["message"]


async def test_repeated_registration_id_keeps_the_last_line(admin: AdminClient) -> None:
    body = [_enrollment("twice", deviceId="first"), _enrollment("TWICE", deviceId="second")]
    result = await admin.ok("POST", IMPORT, json=body)
    assert (result["imported"], result["failed"]) == (2, 0)
    default = await admin.instance("default")
    assert await admin.context.store.count_individual_enrollments(default.id) == 1
    stored = await admin.context.store.get_individual_enrollment(default.id, "twice")
    assert stored is not None and stored.device_id == "second"


async def test_oversized_item_and_broken_array_are_reported(admin: AdminClient) -> None:
    huge = _enrollment(
        "huge", optionalDeviceInformation={"blob": "x" * (admin.context.limits.max_body_bytes + 1)}
    )
    body = (
        "["
        + json.dumps(_enrollment("ok-1"))
        + ","
        + json.dumps(huge)
        + ","
        + json.dumps(_enrollment("ok-2"))
    ).encode()
    headers = {**admin.admin_headers, "Content-Type": "application/json"}
    result = await admin.ok("POST", IMPORT, data=body, headers=headers)
    # ok-2 is not complete until the array closes, so it is part of the break.
    assert (result["imported"], result["failed"]) == (1, 2)
    assert [(e["line"], e["errorCode"]) for e in result["errors"]] == [
        (2, BODY_TOO_LARGE),
        (3, INVALID_BODY),
    ]
    assert "not closed" in result["errors"][1]["message"]


async def test_import_with_a_policy_reaches_its_own_instance(admin: AdminClient) -> None:
    created = await admin.ok("POST", "/instances", json={"name": "contoso"}, status=201)
    headers = policy_headers(
        "contoso.localhost", OWNER_POLICY_NAME, created["ownerPolicy"]["primaryKey"]
    )
    result = await admin.ok(
        "POST", "/instances/contoso/enrollments/import", json=[_enrollment("c-1")], headers=headers
    )
    assert result["imported"] == 1
    audit = await admin.ok("GET", "/audit?limit=1", headers=headers)
    assert (audit["value"][0]["actor"], audit["value"][0]["target"]) == (
        OWNER_POLICY_NAME,
        "enrollments (1 imported)",
    )


async def test_empty_import_changes_nothing(admin: AdminClient) -> None:
    result = await admin.ok(
        "POST",
        IMPORT,
        data=b"",
        headers={**admin.admin_headers, "Content-Type": "application/x-ndjson"},
    )
    assert result == {"imported": 0, "failed": 0, "errors": [], "errorsTruncated": False}
    assert (await admin.ok("GET", "/audit?instance=default"))["value"] == []
