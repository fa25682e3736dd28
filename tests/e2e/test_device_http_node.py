"""Device registration over HTTPS with the unmodified Node device SDK
(azure-iot-provisioning-device + -http + azure-iot-security-symmetric-key), enrollments made and
registration states read back with the unmodified Python service SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.iot.deviceprovisioning import DeviceProvisioningClient

from opendps.attestation.symmetric import derive_device_key
from tests.e2e.harness import RunningServer, run_node

pytestmark = pytest.mark.e2e

BUILTIN_HUB = "default.builtin-hub.localhost"


@pytest.fixture
def service(server: RunningServer) -> Iterator[DeviceProvisioningClient]:
    client = DeviceProvisioningClient.from_connection_string(
        server.connection_string, connection_verify=server.ca_file, retry_total=0
    )
    yield client
    client.close()


def register(server: RunningServer, registration_id: str, key: str, **env: str) -> dict[str, Any]:
    return run_node(
        "device_register.js",
        ["http"],
        {
            "NODE_EXTRA_CA_CERTS": server.ca_file,
            "OPENDPS_HOST": "localhost",
            "OPENDPS_ID_SCOPE": env.pop("scope", server.id_scope),
            "OPENDPS_REGISTRATION_ID": registration_id,
            "OPENDPS_DEVICE_KEY": key,
            **env,
        },
    )


def enroll(service: DeviceProvisioningClient, registration_id: str, **fields: Any) -> str:
    created = service.enrollment.create_or_update(
        id=registration_id,
        enrollment={
            "registrationId": registration_id,
            "attestation": {"type": "symmetricKey", "symmetricKey": {}},
            **fields,
        },
    )
    return str(created["attestation"]["symmetricKey"]["primaryKey"])


def enroll_group(service: DeviceProvisioningClient, group_id: str, **fields: Any) -> str:
    created = service.enrollment_group.create_or_update(
        id=group_id,
        enrollment_group={
            "enrollmentGroupId": group_id,
            "attestation": {"type": "symmetricKey", "symmetricKey": {}},
            **fields,
        },
    )
    return str(created["attestation"]["symmetricKey"]["secondaryKey"])


def test_individual_enrollment_registers_and_its_state_reads_back(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient
) -> None:
    rid = f"http-{server.backend}-ind"
    key = enroll(service, rid, deviceId=f"{rid}-dev", initialTwin={"tags": {"room": "lab"}})

    result = register(server, rid, key)

    state = result["registrationState"]
    assert state["status"] == "assigned" and state["substatus"] == "initialAssignment"
    assert state["assignedHub"] == BUILTIN_HUB and state["deviceId"] == f"{rid}-dev"
    stored = service.device_registration_state.get(id=rid)
    assert stored["status"] == "assigned" and stored["assignedHub"] == BUILTIN_HUB
    assert stored["deviceId"] == f"{rid}-dev" and stored["etag"] == state["etag"]


def test_group_derived_key_registers_and_reregistration_keeps_the_hub(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient
) -> None:
    group_id = f"http-{server.backend}-grp"
    group_key = enroll_group(service, group_id)
    rid = f"http-{server.backend}-member"
    device_key = derive_device_key(group_key, rid)  # the secondary group key derives too

    first = register(server, rid, device_key)["registrationState"]
    again = register(server, rid, device_key)["registrationState"]

    assert first["status"] == "assigned" and first["deviceId"] == rid
    assert again["status"] == "assigned" and again["assignedHub"] == first["assignedHub"]
    states = list(service.device_registration_state.query(id=group_id))
    assert [s["registrationId"] for s in states] == [rid]


@pytest.mark.parametrize("kind", ["individual", "group"])
def test_disabled_enrollment_is_refused_with_status_disabled(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient, kind: str
) -> None:
    rid = f"http-{server.backend}-dis-{kind}"
    if kind == "individual":
        key = enroll(service, rid, provisioningStatus="disabled")
    else:
        group_key = enroll_group(service, f"{rid}-grp", provisioningStatus="disabled")
        key = derive_device_key(group_key, rid)

    result = register(server, rid, key)

    # Node turns any status other than assigned/assigning/failed into an error naming it.
    assert "registrationState" not in result
    assert "disabled" in result["message"]
    assert service.device_registration_state.get(id=rid)["status"] == "disabled"


def test_wrong_key_is_refused_with_401(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient
) -> None:
    rid = f"http-{server.backend}-wrong"
    enroll(service, rid)

    result = register(server, rid, derive_device_key("AAAA" * 11, rid))

    assert result["error"] == "UnauthorizedError" and result["statusCode"] == 401
    assert result["body"]["errorCode"] == 401002
    with pytest.raises(ResourceNotFoundError):
        service.device_registration_state.get(id=rid)  # a refusal stores nothing


def test_expired_token_is_refused_with_401(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient
) -> None:
    rid = f"http-{server.backend}-expired"
    key = enroll(service, rid)

    result = register(server, rid, key, OPENDPS_EXPIRED_TOKEN="1")

    assert result["statusCode"] == 401 and result["body"]["errorCode"] == 401002


def test_unknown_id_scope_is_refused_with_401(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient
) -> None:
    rid = f"http-{server.backend}-noscope"
    key = enroll(service, rid)

    result = register(server, rid, key, scope="0ne00000000")

    assert result["statusCode"] == 401 and result["body"]["errorCode"] == 401002


def test_unenrolled_device_is_refused_with_401(server: RunningServer, node_modules: Path) -> None:
    result = register(server, f"http-{server.backend}-stranger", "AAAA" * 10 + "AAA=")

    assert result["statusCode"] == 401


def test_disabling_a_group_takes_effect_for_the_next_registration(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient
) -> None:
    group_id = f"http-{server.backend}-toggle"
    group_key = enroll_group(service, group_id)
    rid = f"http-{server.backend}-toggled"
    device_key = derive_device_key(group_key, rid)
    assert register(server, rid, device_key)["registrationState"]["status"] == "assigned"

    group = service.enrollment_group.get(id=group_id)
    service.enrollment_group.create_or_update(
        id=group_id, enrollment_group={**group, "provisioningStatus": "disabled"}
    )

    assert "disabled" in register(server, rid, device_key)["message"]
