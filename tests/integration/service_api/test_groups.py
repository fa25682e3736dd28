"""Enrollment groups through the service API, including Node's lower-case path spelling."""

from __future__ import annotations

import base64

from tests.integration.service_api.conftest import (
    CA_NAME,
    Service,
    assert_dps_error,
    make_certificate,
)
from tests.storefixtures import sample_registration

from opendps.model.errors import ENROLLMENT_GROUP_NOT_FOUND, ETAG_MISMATCH, INVALID_BODY, INVALID_ID


async def test_a_group_is_created_read_updated_and_deleted(service: Service) -> None:
    created = await service.put_group("grp-1", initialTwin={"tags": {"fleet": "a"}})
    keys = created["attestation"]["symmetricKey"]
    assert len(keys["primaryKey"]) == 88 and created["enrollmentGroupId"] == "grp-1"

    fetched_response = await service.call("GET", "/enrollmentGroups/grp-1")
    assert fetched_response.status == 200
    fetched = await fetched_response.json()
    assert fetched["attestation"] == {"type": "symmetricKey", "symmetricKey": {}}
    assert fetched["initialTwin"] == {"tags": {"fleet": "a"}}

    service.clock.advance(5)
    response = await service.call(
        "PUT",
        "/enrollmentGroups/grp-1",
        json={**fetched, "provisioningStatus": "disabled"},
        headers={"If-Match": fetched["etag"]},
    )
    assert response.status == 200
    updated = await response.json()
    assert updated["etag"] != created["etag"] and updated["attestation"] == created["attestation"]
    assert (
        updated["createdDateTimeUtc"]
        == created["createdDateTimeUtc"]
        != updated["lastUpdatedDateTimeUtc"]
    )

    await assert_dps_error(
        await service.call(
            "DELETE", "/enrollmentGroups/grp-1", headers={"If-Match": created["etag"]}
        ),
        412,
        ETAG_MISMATCH,
    )
    deleted = await service.call(
        "DELETE", "/enrollmentGroups/grp-1", headers={"If-Match": updated["etag"]}
    )
    assert deleted.status == 204 and await deleted.read() == b""
    await assert_dps_error(
        await service.call("GET", "/enrollmentGroups/grp-1"), 404, ENROLLMENT_GROUP_NOT_FOUND
    )
    await assert_dps_error(
        await service.call("DELETE", "/enrollmentGroups/grp-1"), 404, ENROLLMENT_GROUP_NOT_FOUND
    )


async def test_node_reads_group_keys_through_the_lower_case_path(service: Service) -> None:
    created = await service.put_group("grp-keys")
    response = await service.call("POST", "/enrollmentgroups/grp-keys/attestationmechanism")
    assert response.status == 200
    assert await response.json() == created["attestation"]
    await assert_dps_error(
        await service.call("POST", "/enrollmentgroups/none/attestationmechanism"),
        404,
        ENROLLMENT_GROUP_NOT_FOUND,
    )


async def test_any_spelling_of_the_group_segment_is_accepted(service: Service) -> None:
    await service.put_group("grp-case")
    for segment in ("enrollmentGroups", "enrollmentgroups", "ENROLLMENTGROUPS", "EnrollmentGroups"):
        assert (await service.call("GET", f"/{segment}/grp-case")).status == 200


async def test_x509_groups_take_signing_certificates_in_every_form(service: Service) -> None:
    pem = make_certificate("Contoso Intermediate", is_ca=True)
    for group_id, text in (("grp-pem", pem), ("grp-b64", base64.b64encode(pem.encode()).decode())):
        created = await service.put_group(
            group_id,
            attestation={
                "type": "x509",
                "x509": {"signingCertificates": {"primary": {"certificate": text}}},
            },
        )
        info = created["attestation"]["x509"]["signingCertificates"]["primary"]["info"]
        assert info["subjectName"] == "CN=Contoso Intermediate"
        fetched = await (await service.call("GET", f"/enrollmentGroups/{group_id}")).json()
        assert fetched["attestation"]["x509"]["signingCertificates"]["primary"] == {"info": info}


async def test_x509_groups_may_reference_a_ca_certificate_of_the_instance(service: Service) -> None:
    attestation = {"type": "x509", "x509": {"caReferences": {"primary": CA_NAME}}}
    created = await service.put_group("grp-ca", attestation=attestation)
    assert created["attestation"] == attestation


async def test_a_reference_to_an_unknown_ca_is_refused_and_changes_nothing(
    service: Service,
) -> None:
    before = await service.snapshot()
    body = {
        "enrollmentGroupId": "grp-badca",
        "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "nope"}}},
    }
    error = await assert_dps_error(
        await service.call("PUT", "/enrollmentGroups/grp-badca", json=body), 400, INVALID_BODY
    )
    assert "caReferences.primary" in error["message"]
    assert await service.snapshot() == before


async def test_tpm_groups_are_refused(service: Service) -> None:
    body = {
        "enrollmentGroupId": "grp-tpm",
        "attestation": {"type": "tpm", "tpm": {"endorsementKey": "AAAA"}},
    }
    await assert_dps_error(
        await service.call("PUT", "/enrollmentGroups/grp-tpm", json=body), 400, INVALID_BODY
    )


async def test_the_body_group_id_must_match_the_path(service: Service) -> None:
    body = {"enrollmentGroupId": "grp-other", "attestation": {"type": "symmetricKey"}}
    await assert_dps_error(
        await service.call("PUT", "/enrollmentGroups/grp-this", json=body), 400, INVALID_ID
    )
    same = {"enrollmentGroupId": "GRP-THIS", "attestation": {"type": "symmetricKey"}}
    assert (await service.call("PUT", "/enrollmentGroups/grp-this", json=same)).status == 200


async def test_an_invalid_group_id_is_refused(service: Service) -> None:
    body = {"enrollmentGroupId": "-bad-", "attestation": {"type": "symmetricKey"}}
    await assert_dps_error(
        await service.call("PUT", "/enrollmentGroups/-bad-", json=body), 400, INVALID_ID
    )


async def test_deleting_a_group_keeps_its_registration_states(service: Service) -> None:
    await service.put_group("grp-states")
    await service.store.put_registration_state(
        sample_registration(service.a.id, "member-1", group_id="grp-states")
    )
    assert (await service.call("DELETE", "/enrollmentGroups/grp-states")).status == 204
    assert (await service.call("GET", "/registrations/member-1")).status == 200
    listed = await service.call("POST", "/registrations/grp-states/query")
    assert [s["registrationId"] for s in await listed.json()] == ["member-1"]


async def test_group_writes_are_audited(service: Service) -> None:
    await service.put_group("grp-audit")
    await service.call("DELETE", "/enrollmentGroups/grp-audit")
    entries = await service.store.list_audit(instance_id=service.a.id, before_id=None, limit=10)
    assert [(e.action, e.target) for e in reversed(entries)] == [
        ("enrollmentGroup.create", "enrollmentGroups/grp-audit"),
        ("enrollmentGroup.delete", "enrollmentGroups/grp-audit"),
    ]
