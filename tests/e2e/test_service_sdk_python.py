"""The unmodified Python service clients against OpenDPS.

`azure-iot-deviceprovisioning` 1.0.0b1 (azure-core; strict 200/204) and the legacy
`azure-iothub-provisioningserviceclient` 1.2.0 (msrest; api-version 2018-09-01-preview).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.iot.deviceprovisioning import DeviceProvisioningClient

from tests.e2e.harness import RunningServer
from tests.e2e.pki import issue

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(server: RunningServer) -> Iterator[DeviceProvisioningClient]:
    dps = DeviceProvisioningClient.from_connection_string(
        server.connection_string, connection_verify=server.ca_file, retry_total=0
    )
    yield dps
    dps.close()


def _symmetric(registration_id: str) -> dict[str, object]:
    return {
        "registrationId": registration_id,
        "attestation": {"type": "symmetricKey", "symmetricKey": {}},
    }


def test_python_client_creates_gets_updates_and_deletes_an_individual_enrollment(
    client: DeviceProvisioningClient, server: RunningServer
) -> None:
    rid = f"py-{server.backend}-individual"
    created = client.enrollment.create_or_update(
        id=rid,
        enrollment={
            **_symmetric(rid),
            "deviceId": "py-device",
            "initialTwin": {"tags": {"floor": 3}, "properties": {"desired": {"mode": "eco"}}},
            "reprovisionPolicy": {"updateHubAssignment": True, "migrateDeviceData": False},
        },
    )
    assert created["registrationId"] == rid
    assert created["reprovisionPolicy"] == {"updateHubAssignment": True, "migrateDeviceData": False}
    fetched = client.enrollment.get(id=rid)
    assert fetched["deviceId"] == "py-device" and fetched["etag"] == created["etag"]
    mechanism = client.enrollment.get_attestation_mechanism(id=rid)
    assert mechanism["type"] == "symmetricKey"
    assert (
        mechanism["symmetricKey"]["primaryKey"]
        == created["attestation"]["symmetricKey"]["primaryKey"]
    )

    updated = client.enrollment.create_or_update(
        id=rid, enrollment={**fetched, "provisioningStatus": "disabled"}, if_match=fetched["etag"]
    )
    assert updated["provisioningStatus"] == "disabled"
    with pytest.raises(HttpResponseError) as stale:
        client.enrollment.create_or_update(id=rid, enrollment=fetched, if_match=fetched["etag"])
    assert stale.value.status_code == 412

    client.enrollment.delete(id=rid, if_match=updated["etag"])
    with pytest.raises(ResourceNotFoundError):
        client.enrollment.get(id=rid)


def test_python_client_manages_enrollment_groups_with_x509_signing_certificates(
    client: DeviceProvisioningClient, server: RunningServer
) -> None:
    gid = f"py-{server.backend}-group"
    ca = issue("OpenDPS e2e intermediate", is_ca=True)
    created = client.enrollment_group.create_or_update(
        id=gid,
        enrollment_group={
            "enrollmentGroupId": gid,
            "attestation": {
                "type": "x509",
                "x509": {"signingCertificates": {"primary": {"certificate": ca.pem}}},
            },
        },
    )
    info = created["attestation"]["x509"]["signingCertificates"]["primary"]["info"]
    assert "OpenDPS e2e intermediate" in info["subjectName"]
    groups = list(client.enrollment_group.query(query_specification={"query": "*"}))
    assert gid in [g["enrollmentGroupId"] for g in groups]
    client.enrollment_group.delete(id=gid)
    with pytest.raises(ResourceNotFoundError):
        client.enrollment_group.get(id=gid)


def test_python_client_pages_through_a_query(
    client: DeviceProvisioningClient, server: RunningServer
) -> None:
    ids = [f"py-{server.backend}-page-{n}" for n in range(7)]
    for rid in ids:
        client.enrollment.create_or_update(id=rid, enrollment=_symmetric(rid))
    pager = client.enrollment.query(query_specification={"query": "*"}, top=3)
    pages = [list(page) for page in pager.by_page()]
    seen = [e["registrationId"] for page in pages for e in page]
    assert all(len(page) <= 3 for page in pages) and len(pages) >= 3
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    for rid in ids:
        client.enrollment.delete(id=rid)


def test_python_client_runs_bulk_operations(
    client: DeviceProvisioningClient, server: RunningServer
) -> None:
    ids = [f"py-{server.backend}-bulk-{n}" for n in range(3)]
    enrollments = [_symmetric(rid) for rid in ids]
    result = client.enrollment.run_bulk_operation(
        bulk_operation={"mode": "create", "enrollments": enrollments}
    )
    assert result["isSuccessful"] is True
    again = client.enrollment.run_bulk_operation(
        bulk_operation={"mode": "create", "enrollments": enrollments}
    )
    assert again["isSuccessful"] is False
    assert sorted(e["registrationId"] for e in again["errors"]) == sorted(ids)
    too_many = [_symmetric(f"py-{server.backend}-many-{n}") for n in range(11)]
    with pytest.raises(HttpResponseError) as err:
        client.enrollment.run_bulk_operation(
            bulk_operation={"mode": "create", "enrollments": too_many}
        )
    assert err.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        client.enrollment.get(
            id=f"py-{server.backend}-many-0"
        )  # nothing of the refused batch stored
    deleted = client.enrollment.run_bulk_operation(
        bulk_operation={"mode": "delete", "enrollments": enrollments}
    )
    assert deleted["isSuccessful"] is True


def test_python_client_creating_an_existing_group_in_bulk_reports_a_conflict(
    client: DeviceProvisioningClient, server: RunningServer
) -> None:
    gid = f"py-{server.backend}-bulkgroup"
    group = {"enrollmentGroupId": gid, "attestation": {"type": "symmetricKey", "symmetricKey": {}}}
    assert client.enrollment_group.run_bulk_operation(
        bulk_operation={"mode": "create", "enrollmentGroups": [group]}
    )["isSuccessful"]
    again = client.enrollment_group.run_bulk_operation(
        bulk_operation={"mode": "create", "enrollmentGroups": [group]}
    )
    assert (
        again["errors"][0]["enrollmentGroupId"] == gid and again["errors"][0]["errorCode"] == 409201
    )
    client.enrollment_group.delete(id=gid)


def test_python_client_gets_404_for_a_missing_registration_state(
    client: DeviceProvisioningClient, server: RunningServer
) -> None:
    with pytest.raises(ResourceNotFoundError):
        client.device_registration_state.get(id=f"py-{server.backend}-never")
    assert list(client.device_registration_state.query(id=f"py-{server.backend}-nogroup")) == []


def test_python_client_with_a_forged_key_is_refused(server: RunningServer) -> None:
    forged = (
        server.connection_string.rsplit("SharedAccessKey=", 1)[0]
        + "SharedAccessKey="
        + "A" * 43
        + "="
    )
    dps = DeviceProvisioningClient.from_connection_string(
        forged, connection_verify=server.ca_file, retry_total=0
    )
    with pytest.raises(HttpResponseError) as err:
        dps.enrollment.get(id="anything")
    assert err.value.status_code == 401
    dps.close()


def test_legacy_python_client_manages_an_individual_enrollment(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provisioningserviceclient import (  # type: ignore[import-untyped]
        ProvisioningServiceClient,
        QuerySpecification,
    )
    from provisioningserviceclient.models import (  # type: ignore[import-untyped]
        AttestationMechanism,
        IndividualEnrollment,
    )
    from provisioningserviceclient.protocol.models import (  # type: ignore[import-untyped]
        SymmetricKeyAttestation,
    )

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
    client = ProvisioningServiceClient.create_from_connection_string(server.connection_string)
    rid = f"legacy-{server.backend}"
    attestation = AttestationMechanism(type="symmetricKey", symmetric_key=SymmetricKeyAttestation())
    created = client.create_or_update(IndividualEnrollment.create(rid, attestation))
    assert created.registration_id == rid and created.etag
    fetched = client.get_individual_enrollment(rid)
    assert fetched.registration_id == rid and fetched.provisioning_status == "enabled"
    results = client.create_individual_enrollment_query(
        QuerySpecification(query="*"), page_size=50
    ).next()
    assert rid in [e.registration_id for e in results]
    client.delete_individual_enrollment_by_param(rid)
    with pytest.raises(Exception) as err:
        client.get_individual_enrollment(rid)
    assert "404" in str(err.value)


def test_python_client_with_an_explicit_port_in_the_host_name_is_accepted(
    server: RunningServer,
) -> None:
    # clients.md §4: `sr` carries the connection string's HostName, with its port if it has one.
    with_port = server.connection_string.replace("HostName=localhost;", "HostName=localhost:443;")
    dps = DeviceProvisioningClient.from_connection_string(
        with_port, connection_verify=server.ca_file, retry_total=0
    )
    assert isinstance(list(dps.enrollment.query(query_specification={"query": "*"}, top=1)), list)
    dps.close()


def test_legacy_python_client_manages_x509_groups_and_detects_stale_etags(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provisioningserviceclient import (  # type: ignore[import-untyped]
        ProvisioningServiceClient,
        ProvisioningServiceError,
    )
    from provisioningserviceclient.models import (  # type: ignore[import-untyped]
        AttestationMechanism,
        EnrollmentGroup,
        IndividualEnrollment,
    )

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
    client = ProvisioningServiceClient.create_from_connection_string(server.connection_string)
    ca = issue("OpenDPS legacy e2e CA", is_ca=True)
    gid = f"legacy-{server.backend}-group"
    group = client.create_or_update(
        EnrollmentGroup.create(gid, AttestationMechanism.create_with_x509_signing_certs(ca.pem))
    )
    assert group.enrollment_group_id == gid and group.etag
    assert client.get_enrollment_group(gid).enrollment_group_id == gid
    client.delete(group)

    rid = f"legacy-{server.backend}-x509"
    device = issue(rid)
    created = client.create_or_update(
        IndividualEnrollment.create(
            rid, AttestationMechanism.create_with_x509_client_certs(device.pem)
        )
    )
    created.provisioning_status = "disabled"
    updated = client.create_or_update(created)  # sends If-Match: the etag it read
    assert updated.provisioning_status == "disabled" and updated.etag != created.etag
    with pytest.raises(ProvisioningServiceError) as stale:
        client.create_or_update(created)  # still carries the old etag
    assert "412" in str(stale.value)
    client.delete(updated)
