"""Device registration over AMQP 1.0 with the unmodified Node device SDK
(azure-iot-provisioning-device + -amqp, `Amqp` on 5671 and `AmqpWs` on 443, with
azure-iot-security-symmetric-key); enrollments made and registration states read back with the
unmodified Python service SDK."""

from __future__ import annotations

import json
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
TRANSPORTS = ["amqp", "amqpws"]


@pytest.fixture
def service(server: RunningServer) -> Iterator[DeviceProvisioningClient]:
    client = DeviceProvisioningClient.from_connection_string(
        server.connection_string, connection_verify=server.ca_file, retry_total=0
    )
    yield client
    client.close()


def register(
    server: RunningServer, transport: str, registration_id: str, key: str, **env: str
) -> dict[str, Any]:
    return run_node(
        "device_register.js",
        [transport],
        {
            "NODE_EXTRA_CA_CERTS": server.ca_file,
            "OPENDPS_HOST": "localhost",  # Amqp dials 5671, AmqpWs 443
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
    return str(created["attestation"]["symmetricKey"]["primaryKey"])


def assert_unauthorized(result: dict[str, Any]) -> None:
    """A rejected register delivery: Node hands back the AMQP error it got, whose condition
    is `amqp:unauthorized-access` and whose description is the DPS error JSON."""
    assert "registrationState" not in result, result
    assert result["condition"] == "amqp:unauthorized-access", result
    assert json.loads(result["description"])["errorCode"] == 401002


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_individual_enrollment_registers_and_its_state_reads_back(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient, transport: str
) -> None:
    rid = f"{transport}-{server.backend}-ind"
    key = enroll(service, rid, deviceId=f"{rid}-dev", initialTwin={"tags": {"room": "lab"}})

    result = register(server, transport, rid, key, OPENDPS_PAYLOAD='{"model": "m1"}')

    state = result["registrationState"]
    assert state["status"] == "assigned" and state["substatus"] == "initialAssignment"
    assert state["assignedHub"] == BUILTIN_HUB and state["deviceId"] == f"{rid}-dev"
    stored = service.device_registration_state.get(id=rid)
    assert stored["status"] == "assigned" and stored["assignedHub"] == BUILTIN_HUB
    assert stored["deviceId"] == f"{rid}-dev" and stored["etag"] == state["etag"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_group_derived_key_registers_and_reregistration_keeps_the_hub(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient, transport: str
) -> None:
    group_id = f"{transport}-{server.backend}-grp"
    group_key = enroll_group(service, group_id)
    rid = f"{transport}-{server.backend}-member"
    device_key = derive_device_key(group_key, rid)

    first = register(server, transport, rid, device_key)["registrationState"]
    again = register(server, transport, rid, device_key)["registrationState"]

    assert first["status"] == "assigned" and first["deviceId"] == rid
    assert again["status"] == "assigned" and again["assignedHub"] == first["assignedHub"]
    states = list(service.device_registration_state.query(id=group_id))
    assert [s["registrationId"] for s in states] == [rid]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_key_is_refused_with_unauthorized_access(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient, transport: str
) -> None:
    rid = f"{transport}-{server.backend}-wrong"
    enroll(service, rid)

    result = register(server, transport, rid, derive_device_key("AAAA" * 11, rid))

    assert_unauthorized(result)
    with pytest.raises(ResourceNotFoundError):
        service.device_registration_state.get(id=rid)  # a refusal stores nothing


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_expired_token_is_refused_with_unauthorized_access(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient, transport: str
) -> None:
    rid = f"{transport}-{server.backend}-expired"
    key = enroll(service, rid)

    result = register(server, transport, rid, key, OPENDPS_EXPIRED_TOKEN="1")

    assert_unauthorized(result)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unknown_id_scope_is_refused_with_unauthorized_access(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient, transport: str
) -> None:
    rid = f"{transport}-{server.backend}-noscope"
    key = enroll(service, rid)

    result = register(server, transport, rid, key, scope="0ne00000000")

    assert_unauthorized(result)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["individual", "group"])
def test_disabled_enrollment_is_refused_with_status_disabled(
    server: RunningServer,
    node_modules: Path,
    service: DeviceProvisioningClient,
    transport: str,
    kind: str,
) -> None:
    rid = f"{transport}-{server.backend}-dis-{kind}"
    if kind == "individual":
        key = enroll(service, rid, provisioningStatus="disabled")
    else:
        group_key = enroll_group(service, f"{rid}-grp", provisioningStatus="disabled")
        key = derive_device_key(group_key, rid)

    result = register(server, transport, rid, key)

    # Node turns any status other than assigned/assigning/failed into an error naming it.
    assert "registrationState" not in result
    assert "disabled" in result["message"]
    assert service.device_registration_state.get(id=rid)["status"] == "disabled"
