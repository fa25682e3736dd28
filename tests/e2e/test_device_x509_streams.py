"""X.509 device registration over the stream transports with the unmodified official clients:
MQTT (TLS 8883) and MQTT over WebSockets (443) with Python `azure-iot-device` 2.14.0
(`X509(cert_file, key_file)`, `websockets=False/True`) and Node `azure-iot-security-x509` with
`Mqtt` / `MqttWs`; AMQP (TLS 5671) and AMQP over WebSockets (443) with Node `Amqp` / `AmqpWs`.
The cert file holds the leaf then the intermediates; the TLS client chain is the only credential
(no MQTT password, no AMQP SASL layer: protocol.md §3, §4, §5). The HTTPS flavour, with deeper
checks of the result's `x509` fields, is test_device_x509_node.py."""

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

from tests.e2e.harness import RunningServer, run_node
from tests.e2e.x509_cli import device, enroll_x509, opendps, verified_root, x509_group

pytestmark = pytest.mark.e2e

BUILTIN_HUB = "default.builtin-hub.localhost"
PYTHON_SCRIPT = Path(__file__).parent / "python_device_register_x509.py"
CLIENTS = [
    ("python", "mqtt"),
    ("python", "ws"),
    ("node", "mqtt"),
    ("node", "mqttws"),
    ("node", "amqp"),
    ("node", "amqpws"),
]
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
    server: RunningServer, flavour: tuple[str, str], registration_id: str, files: dict[str, str]
) -> dict[str, Any]:
    client, transport = flavour
    env = {
        "OPENDPS_HOST": "localhost",
        "OPENDPS_ID_SCOPE": server.id_scope,
        "OPENDPS_REGISTRATION_ID": registration_id,
        "OPENDPS_CERT_FILE": files["chain"],
        "OPENDPS_KEY_FILE": files["key"],
    }
    if client == "node":
        return run_node(
            "device_register_x509.js", [transport], {"NODE_EXTRA_CA_CERTS": server.ca_file, **env}
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
        # Python raises ClientError caused by its pipeline's ServiceError naming the status.
        assert result["error"] == "ClientError" and result["cause"] == "ServiceError", result
        assert "status code 401" in result["causeMessage"], result
    elif flavour[1].startswith("amqp"):
        # Node hands back the AMQP error of the rejected register delivery: condition
        # `amqp:unauthorized-access`, description = the DPS error JSON.
        assert result["condition"] == "amqp:unauthorized-access", result
        assert json.loads(result["description"])["errorCode"] == 401002
    else:
        assert result["error"] == "UnauthorizedError", result


def name(server: RunningServer, flavour: tuple[str, str], what: str) -> str:
    return f"sx-{server.backend}-{flavour[0]}-{flavour[1]}-{what}"


def test_self_signed_individual_registers(
    server: RunningServer, flavour: tuple[str, str], service: DeviceProvisioningClient,
    tmp_path: Path,
) -> None:  # fmt: skip
    rid = name(server, flavour, "self")
    files = device(tmp_path, rid)
    enroll_x509(service, rid, files["certificate"], deviceId=f"{rid}-dev")

    state = state_of(register(server, flavour, rid, files))

    assert state["assignedHub"] == BUILTIN_HUB and state["deviceId"] == f"{rid}-dev"
    stored = service.device_registration_state.get(id=rid)
    assert stored["status"] == "assigned" and stored["deviceId"] == f"{rid}-dev"
    on_hub = opendps("hub", "device", "show", BUILTIN_HUB, f"{rid}-dev", server=server)
    assert on_hub["authenticationKind"] == "selfSigned"


def test_group_through_an_intermediate_of_a_verified_root_registers(
    server: RunningServer, flavour: tuple[str, str], service: DeviceProvisioningClient,
    tmp_path: Path,
) -> None:  # fmt: skip
    ca_name = name(server, flavour, "root")
    root = verified_root(server, tmp_path, ca_name)
    mid = opendps("cert", "create-intermediate", "--ca", root["certificate"],
                  "--ca-key", root["key"], "--out", str(tmp_path))  # fmt: skip
    group_id = name(server, flavour, "fleet")
    x509_group(service, group_id, ca_name)
    rid = name(server, flavour, "car")

    state = state_of(register(server, flavour, rid, device(tmp_path, rid, mid)))

    assert state["assignedHub"] == BUILTIN_HUB and state["deviceId"] == rid
    listed = list(service.device_registration_state.query(id=group_id))
    assert [s["registrationId"] for s in listed] == [rid] and listed[0]["status"] == "assigned"
    on_hub = opendps("hub", "device", "show", BUILTIN_HUB, rid, server=server)
    assert on_hub["authenticationKind"] == "certificateAuthority"


def test_device_of_an_unenrolled_ca_is_refused_with_401(
    server: RunningServer, flavour: tuple[str, str], service: DeviceProvisioningClient,
    tmp_path: Path,
) -> None:  # fmt: skip
    rid = name(server, flavour, "stranger")
    root = opendps("cert", "create-root", "--out", str(tmp_path))

    assert_refused_with_401(flavour, register(server, flavour, rid, device(tmp_path, rid, root)))
    with pytest.raises(ResourceNotFoundError):
        service.device_registration_state.get(id=rid)


def test_a_certificate_whose_cn_is_another_device_is_refused_with_401(
    server: RunningServer, flavour: tuple[str, str], service: DeviceProvisioningClient,
    tmp_path: Path,
) -> None:  # fmt: skip
    rid = name(server, flavour, "cn")
    files = device(tmp_path, f"{rid}-other")
    enroll_x509(service, rid, files["certificate"])

    assert_refused_with_401(flavour, register(server, flavour, rid, files))


def test_device_of_a_disabled_group_is_refused_and_recorded_disabled(
    server: RunningServer, flavour: tuple[str, str], service: DeviceProvisioningClient,
    tmp_path: Path,
) -> None:  # fmt: skip
    ca_name = name(server, flavour, "off-root")
    root = verified_root(server, tmp_path, ca_name)
    x509_group(service, name(server, flavour, "off"), ca_name, provisioningStatus="disabled")
    rid = name(server, flavour, "off-dev")

    result = register(server, flavour, rid, device(tmp_path, rid, root))

    assert "registrationState" not in result and "disabled" in json.dumps(result)
    assert service.device_registration_state.get(id=rid)["status"] == "disabled"
