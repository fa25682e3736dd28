"""Device registration over MQTT (TLS 8883) and MQTT over WebSockets (443) with the
unmodified official clients: Python `azure-iot-device` 2.14.0 (`ProvisioningDeviceClient`,
`websockets=False/True`) and Node `azure-iot-provisioning-device-mqtt` (`Mqtt`, `MqttWs`).
Enrollments are made and registration states read back with the Python service SDK.

Each registration runs in its own process (python_device_register.py, node/device_register.js).
Credentials are checked on the register publish, so refusals arrive as `res/401` with the DPS
error body (docs/mqtt.md): Python raises `ClientError` caused by its pipeline's
`ServiceError` ("... status code 401"), Node `UnauthorizedError`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.iot.deviceprovisioning import DeviceProvisioningClient

from opendps.attestation.symmetric import derive_device_key
from tests.e2e.harness import RunningServer, run_node
from tests.e2e.pki import issue

pytestmark = pytest.mark.e2e

BUILTIN_HUB = "default.builtin-hub.localhost"
PYTHON_SCRIPT = Path(__file__).parent / "python_device_register.py"
# (client, transport) pairs: every official MQTT flavour.
CLIENTS = [("python", "mqtt"), ("python", "ws"), ("node", "mqtt"), ("node", "mqttws")]
CLIENT_IDS = [f"{c}-{t}" for c, t in CLIENTS]


@pytest.fixture
def service(server: RunningServer) -> Iterator[DeviceProvisioningClient]:
    client = DeviceProvisioningClient.from_connection_string(
        server.connection_string, connection_verify=server.ca_file, retry_total=0
    )
    yield client
    client.close()


@pytest.fixture(params=CLIENTS, ids=CLIENT_IDS)
def flavour(request: pytest.FixtureRequest, server: RunningServer) -> tuple[str, str]:
    client, transport = request.param
    if client == "node":
        request.getfixturevalue("node_modules")
    return client, transport


def register(
    server: RunningServer,
    flavour: tuple[str, str],
    registration_id: str,
    key: str,
    *,
    scope: str | None = None,
    expired: bool = False,
    **extra: str,
) -> dict[str, Any]:
    client, transport = flavour
    env = {
        "OPENDPS_HOST": "localhost",
        "OPENDPS_ID_SCOPE": scope or server.id_scope,
        "OPENDPS_REGISTRATION_ID": registration_id,
        "OPENDPS_DEVICE_KEY": key,
        "OPENDPS_EXPIRED_TOKEN": "1" if expired else "0",
        **extra,
    }
    if client == "node":
        return run_node(
            "device_register.js", [transport], {"NODE_EXTRA_CA_CERTS": server.ca_file, **env}
        )
    env |= {"OPENDPS_CA": server.ca_file, "OPENDPS_WEBSOCKETS": "1" if transport == "ws" else "0"}
    proc = subprocess.run(
        [sys.executable, str(PYTHON_SCRIPT)],
        env=dict(os.environ, **env),
        capture_output=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def state_of(result: dict[str, Any]) -> dict[str, Any]:
    assert "registrationState" in result, result
    state: dict[str, Any] = result["registrationState"]
    return state


def assert_refused_with_401(flavour: tuple[str, str], result: dict[str, Any]) -> None:
    assert "registrationState" not in result, result
    if flavour[0] == "python":
        # Python: 300 <= status < 429 → a pipeline ServiceError naming the status
        # (clients.md §2), which `register()` raises as the cause of a ClientError.
        assert result["error"] == "ClientError" and result["cause"] == "ServiceError", result
        assert "status code 401" in result["causeMessage"], result
    else:
        # Node parses the res/401 payload and hands the DPS error body on with the error.
        assert result["error"] == "UnauthorizedError", result
        assert result["body"]["errorCode"] == 401002, result


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


def name(server: RunningServer, flavour: tuple[str, str], what: str) -> str:
    return f"mq-{server.backend}-{flavour[0]}-{flavour[1]}-{what}"


def test_individual_enrollment_registers_and_its_state_reads_back(
    server: RunningServer, flavour: tuple[str, str], service: DeviceProvisioningClient
) -> None:
    rid = name(server, flavour, "ind")
    key = enroll(service, rid, deviceId=f"{rid}-dev")

    state = state_of(register(server, flavour, rid, key))

    assert state["assignedHub"] == BUILTIN_HUB and state["deviceId"] == f"{rid}-dev"
    stored = service.device_registration_state.get(id=rid)
    assert stored["status"] == "assigned" and stored["assignedHub"] == BUILTIN_HUB
    assert stored["deviceId"] == f"{rid}-dev" and stored["substatus"] == "initialAssignment"


def test_group_key_registers_and_reregistration_keeps_the_hub(
    server: RunningServer, flavour: tuple[str, str], service: DeviceProvisioningClient
) -> None:
    group_id = name(server, flavour, "grp")
    group_key = enroll_group(service, group_id)
    rid = name(server, flavour, "member")
    device_key = derive_device_key(group_key, rid)

    first = state_of(register(server, flavour, rid, device_key))
    again = state_of(register(server, flavour, rid, device_key))

    assert first["deviceId"] == rid and again["assignedHub"] == first["assignedHub"]
    states = list(service.device_registration_state.query(id=group_id))
    assert [s["registrationId"] for s in states] == [rid]
    assert states[0]["status"] == "assigned"


def test_wrong_key_is_refused_with_401(
    server: RunningServer, flavour: tuple[str, str], service: DeviceProvisioningClient
) -> None:
    rid = name(server, flavour, "wrong")
    enroll(service, rid)

    result = register(server, flavour, rid, derive_device_key("AAAA" * 11, rid))

    assert_refused_with_401(flavour, result)
    with pytest.raises(ResourceNotFoundError):
        service.device_registration_state.get(id=rid)  # a refusal stores nothing


def test_expired_token_is_refused_with_401(
    server: RunningServer, flavour: tuple[str, str], service: DeviceProvisioningClient
) -> None:
    rid = name(server, flavour, "expired")
    key = enroll(service, rid)

    assert_refused_with_401(flavour, register(server, flavour, rid, key, expired=True))


def test_unknown_id_scope_is_refused_with_401(
    server: RunningServer, flavour: tuple[str, str], service: DeviceProvisioningClient
) -> None:
    rid = name(server, flavour, "noscope")
    key = enroll(service, rid)

    assert_refused_with_401(flavour, register(server, flavour, rid, key, scope="0ne00000000"))


def test_disabled_enrollment_is_refused_and_recorded_disabled(
    server: RunningServer, flavour: tuple[str, str], service: DeviceProvisioningClient
) -> None:
    rid = name(server, flavour, "disabled")
    key = enroll(service, rid, provisioningStatus="disabled")

    result = register(server, flavour, rid, key)

    # Both SDKs turn any status other than assigned/assigning/failed into an error naming it.
    assert "registrationState" not in result, result
    assert "disabled" in json.dumps(result)
    assert service.device_registration_state.get(id=rid)["status"] == "disabled"


@pytest.mark.parametrize("transport", ["mqtt", "ws"])
def test_python_x509_device_without_enrollment_is_refused_with_401(
    server: RunningServer, tmp_path: Path, transport: str
) -> None:
    # No password in CONNECT: the TLS client chain is the credential (protocol.md §3). An
    # unknown self-signed certificate is refused on the register publish, not in the handshake.
    rid = f"mq-{server.backend}-x509-{transport}"
    cert_file, key_file = issue(rid).write(tmp_path, rid)

    result = register(
        server,
        ("python", transport),
        rid,
        "",
        OPENDPS_CERT_FILE=str(cert_file),
        OPENDPS_KEY_FILE=str(key_file),
    )

    assert_refused_with_401(("python", transport), result)
