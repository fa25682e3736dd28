"""Individual enrollments through the service API: CRUD, etags, keys, attestation, audit."""

from __future__ import annotations

import base64
from typing import Any

from tests.integration.service_api.conftest import (
    HOST_B,
    HUB_1,
    HUB_2,
    KEY_A,
    KEY_A_SECONDARY,
    KEY_B,
    Service,
    assert_dps_error,
    make_certificate,
)
from tests.storefixtures import sample_registration
from tests.tpm_keys import EK_A, EK_B

from opendps.model.audit import MeterKind
from opendps.model.errors import ENROLLMENT_NOT_FOUND, ETAG_MISMATCH, INVALID_BODY
from opendps.model.instance import OWNER_POLICY_NAME
from opendps.model.registration import RegistrationStatus

PRIMARY = base64.b64encode(bytes(range(48))).decode()
SECONDARY = base64.b64encode(bytes(range(100, 148))).decode()


async def test_creating_an_enrollment_answers_200_with_generated_keys_echoed(
    service: Service,
) -> None:
    response = await service.call(
        "PUT",
        "/enrollments/sensor-001",
        json={
            "registrationId": "sensor-001",
            "attestation": {"type": "symmetricKey", "symmetricKey": {}},
        },
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = await response.json()
    keys = body["attestation"]["symmetricKey"]
    assert len(keys["primaryKey"]) == 88 and len(keys["secondaryKey"]) == 88
    assert keys["primaryKey"] != keys["secondaryKey"]
    assert body["etag"] and body["registrationId"] == "sensor-001"
    assert (
        body["createdDateTimeUtc"]
        == body["lastUpdatedDateTimeUtc"]
        == "2026-05-01T12:00:00.0000000Z"
    )
    assert body["provisioningStatus"] == "enabled"
    stored = await service.store.get_individual_enrollment(service.a.id, "sensor-001")
    assert stored is not None and stored.spec.attestation.symmetric_key is not None
    assert stored.spec.attestation.symmetric_key.primary_key == keys["primaryKey"]


async def test_a_created_enrollment_keeps_every_setting_sent(service: Service) -> None:
    sent: dict[str, Any] = {
        "registrationId": "Sensor-Full",
        "deviceId": "sensor-full-device",
        "attestation": {
            "type": "symmetricKey",
            "symmetricKey": {"primaryKey": PRIMARY, "secondaryKey": SECONDARY},
        },
        "capabilities": {"iotEdge": True},
        "initialTwin": {
            "tags": {"site": "lab", "x": None},
            "properties": {"desired": {"interval": 30}},
        },
        "provisioningStatus": "disabled",
        "reprovisionPolicy": {"updateHubAssignment": False, "migrateDeviceData": False},
        "allocationPolicy": "static",
        "iotHubs": [HUB_2.upper()],
        "optionalDeviceInformation": {"model": "x1"},
    }
    body = await service.put_enrollment(
        "Sensor-Full", **{k: v for k, v in sent.items() if k != "registrationId"}
    )
    expected = {**sent, "iotHubs": [HUB_2]}  # stored with the linked hub's spelling
    assert {key: body[key] for key in expected} == expected
    fetched = await (await service.call("GET", "/enrollments/sensor-full")).json()
    assert fetched["registrationId"] == "Sensor-Full"  # case-insensitive, case-preserving
    assert fetched["initialTwin"] == sent["initialTwin"]


async def test_get_answers_200_without_key_values(service: Service) -> None:
    created = await service.put_enrollment(
        "dev-1", attestation={"type": "symmetricKey", "symmetricKey": {"primaryKey": PRIMARY}}
    )
    response = await service.call("GET", "/enrollments/dev-1")
    assert response.status == 200
    body = await response.json()
    assert body["attestation"] == {"type": "symmetricKey", "symmetricKey": {}}
    assert PRIMARY not in await response.text()
    assert body["etag"] == created["etag"]
    assert "registrationState" not in body


async def test_get_carries_the_registration_state_once_the_device_registered(
    service: Service,
) -> None:
    await service.put_enrollment("dev-registered")
    await service.store.put_registration_state(sample_registration(service.a.id, "dev-registered"))
    body = await (await service.call("GET", "/enrollments/dev-registered")).json()
    assert body["registrationState"]["status"] == RegistrationStatus.ASSIGNED
    assert body["registrationState"]["assignedHub"] == "hub-1.example.net"


async def test_the_attestation_mechanism_call_answers_200_with_the_keys(service: Service) -> None:
    created = await service.put_enrollment("dev-keys")
    for path in (
        "/enrollments/dev-keys/attestationmechanism",
        "/Enrollments/DEV-KEYS/AttestationMechanism",
    ):
        response = await service.call("POST", path)
        assert response.status == 200
        assert await response.json() == created["attestation"]


async def test_the_attestation_mechanism_of_a_missing_enrollment_is_404(service: Service) -> None:
    await assert_dps_error(
        await service.call("POST", "/enrollments/nope/attestationmechanism"),
        404,
        ENROLLMENT_NOT_FOUND,
    )


async def test_an_update_gets_a_new_etag_and_keeps_the_creation_time(service: Service) -> None:
    created = await service.put_enrollment("dev-2")
    service.clock.advance(90)
    response = await service.call(
        "PUT",
        "/enrollments/dev-2",
        json={**created, "provisioningStatus": "disabled"},
        headers={"If-Match": created["etag"]},
    )
    assert response.status == 200
    updated = await response.json()
    assert updated["etag"] != created["etag"]
    assert updated["createdDateTimeUtc"] == created["createdDateTimeUtc"]
    assert updated["lastUpdatedDateTimeUtc"] == "2026-05-01T12:01:30.0000000Z"
    assert updated["provisioningStatus"] == "disabled"
    assert updated["attestation"] == created["attestation"]


async def test_writing_back_a_get_answer_keeps_keys_and_certificates(service: Service) -> None:
    created = await service.put_enrollment("dev-echo")
    fetched = await (await service.call("GET", "/enrollments/dev-echo")).json()
    response = await service.call(
        "PUT", "/enrollments/dev-echo", json=fetched, headers={"If-Match": fetched["etag"]}
    )
    assert response.status == 200
    assert (await response.json())["attestation"] == created["attestation"]

    pem = make_certificate("dev-x509")
    x509 = {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}}
    await service.put_enrollment("dev-x509", attestation=x509)
    fetched = await (await service.call("GET", "/enrollments/dev-x509")).json()
    assert "certificate" not in fetched["attestation"]["x509"]["clientCertificates"]["primary"]
    assert (await service.call("PUT", "/enrollments/dev-x509", json=fetched)).status == 200
    mechanism = await (
        await service.call("POST", "/enrollments/dev-x509/attestationmechanism")
    ).json()
    assert mechanism["x509"]["clientCertificates"]["primary"]["certificate"] == pem


async def test_x509_enrollments_answer_the_certificate_info(service: Service) -> None:
    pem = make_certificate("dev-x509-info")
    encoded = base64.b64encode(pem.encode()).decode()
    x509 = {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": encoded}}}}
    created = await service.put_enrollment("dev-x509-info", attestation=x509)
    info = created["attestation"]["x509"]["clientCertificates"]["primary"]["info"]
    assert info["subjectName"] == "CN=dev-x509-info" and len(info["sha256Thumbprint"]) == 64
    fetched = await (await service.call("GET", "/enrollments/dev-x509-info")).json()
    assert fetched["attestation"]["x509"]["clientCertificates"]["primary"]["info"] == info


async def test_tpm_enrollments_keep_the_endorsement_key(service: Service) -> None:
    ek = EK_A
    await service.put_enrollment(
        "dev-tpm", attestation={"type": "tpm", "tpm": {"endorsementKey": ek}}
    )
    fetched = await (await service.call("GET", "/enrollments/dev-tpm")).json()
    assert fetched["attestation"] == {"type": "tpm", "tpm": {"endorsementKey": ek}}


async def test_a_new_endorsement_key_forgets_the_old_tpms_registration(service: Service) -> None:
    """As Azure: another EK is another device; the old one's registration state goes."""
    tpm = {"type": "tpm", "tpm": {"endorsementKey": EK_A}}
    await service.put_enrollment("dev-tpm", attestation=tpm, deviceId="kept-device")
    await service.store.put_registration_state(sample_registration(service.a.id, "dev-tpm"))
    await service.put_enrollment("dev-tpm", attestation=tpm, deviceId="other-device")
    assert await service.store.get_registration_state(service.a.id, "dev-tpm") is not None
    await service.put_enrollment(
        "dev-tpm", attestation={"type": "tpm", "tpm": {"endorsementKey": EK_B}}
    )
    assert await service.store.get_registration_state(service.a.id, "dev-tpm") is None


async def test_an_endorsement_key_that_is_no_tpm_key_is_400(service: Service) -> None:
    before = await service.snapshot()
    bad = base64.b64encode(b"\x01\x3a" + bytes(314)).decode()
    response = await service.call(
        "PUT",
        "/enrollments/dev-tpm",
        json={
            "registrationId": "dev-tpm",
            "attestation": {"type": "tpm", "tpm": {"endorsementKey": bad}},
        },
    )
    body = await assert_dps_error(response, 400, INVALID_BODY)
    assert body["message"].startswith("attestation.tpm.endorsementKey")
    assert await service.snapshot() == before


async def test_a_stale_if_match_is_refused_with_412_and_changes_nothing(service: Service) -> None:
    created = await service.put_enrollment("dev-3")
    await service.put_enrollment("dev-3")  # a second write: `created["etag"]` is now stale
    before = await service.snapshot()
    response = await service.call(
        "PUT",
        "/enrollments/dev-3",
        json={**created, "deviceId": "changed"},
        headers={"If-Match": created["etag"]},
    )
    await assert_dps_error(response, 412, ETAG_MISMATCH)
    assert await service.snapshot() == before


async def test_if_match_star_requires_the_enrollment_to_exist(service: Service) -> None:
    body = {"registrationId": "dev-star", "attestation": {"type": "symmetricKey"}}
    before = await service.snapshot()
    await assert_dps_error(
        await service.call("PUT", "/enrollments/dev-star", json=body, headers={"If-Match": "*"}),
        412,
        ETAG_MISMATCH,
    )
    assert await service.snapshot() == before
    await service.put_enrollment("dev-star")
    assert (
        await service.call("PUT", "/enrollments/dev-star", json=body, headers={"If-Match": "*"})
    ).status == 200


async def test_an_if_match_on_a_missing_enrollment_is_412(service: Service) -> None:
    body = {"registrationId": "dev-ghost", "attestation": {"type": "symmetricKey"}}
    response = await service.call(
        "PUT", "/enrollments/dev-ghost", json=body, headers={"If-Match": '"abc"'}
    )
    await assert_dps_error(response, 412, ETAG_MISMATCH)


async def test_an_etag_without_its_quotes_still_matches(service: Service) -> None:
    created = await service.put_enrollment("dev-quotes")
    bare = created["etag"].strip('"')
    response = await service.call(
        "PUT", "/enrollments/dev-quotes", json=created, headers={"If-Match": bare}
    )
    assert response.status == 200


async def test_delete_answers_204_with_no_body(service: Service) -> None:
    created = await service.put_enrollment("dev-4")
    response = await service.call(
        "DELETE", "/enrollments/dev-4", headers={"If-Match": created["etag"]}
    )
    assert response.status == 204
    assert await response.read() == b""
    assert await service.store.get_individual_enrollment(service.a.id, "dev-4") is None
    await assert_dps_error(
        await service.call("GET", "/enrollments/dev-4"), 404, ENROLLMENT_NOT_FOUND
    )


async def test_delete_without_if_match_is_unconditional(service: Service) -> None:
    await service.put_enrollment("dev-5")
    assert (await service.call("DELETE", "/enrollments/DEV-5")).status == 204


async def test_deleting_a_missing_enrollment_is_404(service: Service) -> None:
    await assert_dps_error(
        await service.call("DELETE", "/enrollments/never"), 404, ENROLLMENT_NOT_FOUND
    )


async def test_a_stale_delete_is_refused_with_412_and_changes_nothing(service: Service) -> None:
    created = await service.put_enrollment("dev-6")
    await service.put_enrollment("dev-6")
    before = await service.snapshot()
    response = await service.call(
        "DELETE", "/enrollments/dev-6", headers={"If-Match": created["etag"]}
    )
    await assert_dps_error(response, 412, ETAG_MISMATCH)
    assert await service.snapshot() == before


async def test_every_write_is_audited_without_keys_and_metered(service: Service) -> None:
    created = await service.put_enrollment(
        "dev-audit", attestation={"type": "symmetricKey", "symmetricKey": {"primaryKey": PRIMARY}}
    )
    await service.put_enrollment("dev-audit")
    await service.call("DELETE", "/enrollments/dev-audit")
    entries = await service.store.list_audit(instance_id=service.a.id, before_id=None, limit=10)
    assert [(e.action, e.target, e.actor) for e in reversed(entries)] == [
        ("enrollment.create", "enrollments/dev-audit", OWNER_POLICY_NAME),
        ("enrollment.update", "enrollments/dev-audit", OWNER_POLICY_NAME),
        ("enrollment.delete", "enrollments/dev-audit", OWNER_POLICY_NAME),
    ]
    secrets = (
        PRIMARY,
        created["attestation"]["symmetricKey"]["secondaryKey"],
        KEY_A,
        KEY_A_SECONDARY,
    )
    assert not any(secret in repr(entry) for entry in entries for secret in secrets)
    meters = await service.store.list_meters(service.a.id)
    assert sum(m.count for m in meters if m.kind is MeterKind.ENROLLMENT_CHANGE) == 3


async def test_reads_are_not_audited(service: Service) -> None:
    await service.put_enrollment("dev-read")
    before = await service.snapshot()
    await service.call("GET", "/enrollments/dev-read")
    await service.call("POST", "/enrollments/dev-read/attestationmechanism")
    await service.call("POST", "/enrollments/query", json={"query": "*"})
    assert await service.snapshot() == before


async def test_enrollments_are_invisible_to_another_instance(service: Service) -> None:
    await service.put_enrollment("dev-tenant")
    token = service.token(key=KEY_B, sr=HOST_B)
    response = await service.call("GET", "/enrollments/dev-tenant", host=HOST_B, token=token)
    await assert_dps_error(response, 404, ENROLLMENT_NOT_FOUND)
    listed = await service.call(
        "POST", "/enrollments/query", json={"query": "*"}, host=HOST_B, token=token
    )
    assert await listed.json() == []


async def test_hubs_are_stored_with_the_linked_spelling_and_without_duplicates(
    service: Service,
) -> None:
    body = await service.put_enrollment(
        "dev-hubs", iotHubs=[HUB_1, HUB_1.upper(), HUB_2], iotHubHostName=HUB_1.upper()
    )
    assert body["iotHubs"] == [HUB_1, HUB_2]
    assert body["iotHubHostName"] == HUB_1


async def test_custom_allocation_is_stored_with_its_webhook(service: Service) -> None:
    definition = {
        "webhookUrl": "https://alloc.example.net/api/allocate?code=abc",
        "apiVersion": "2021-10-01",
    }
    body = await service.put_enrollment(
        "dev-custom", allocationPolicy="custom", customAllocationDefinition=definition
    )
    assert body["customAllocationDefinition"] == definition and body["allocationPolicy"] == "custom"
