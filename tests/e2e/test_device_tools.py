"""The issue's "done when" and the device tools against a real `opendps serve` on 443.

A device holding only an ID scope and a group key registers through the unmodified Node SDK
(azure-iot-provisioning-device-http) and lands on the right built-in hub with its initial
twin, read back through the admin hub-device route (`opendps hub device show`); the CLI's own
device simulator (`opendps device register`) and `opendps allocation explain` run as
subprocesses against the same server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.iot.deviceprovisioning import DeviceProvisioningClient

from opendps.attestation.symmetric import derive_device_key
from tests.e2e.harness import RunningServer
from tests.e2e.test_device_http_node import enroll_group, register

pytestmark = pytest.mark.e2e

CLI_TIMEOUT_S = 120
TWIN: dict[str, Any] = {
    "tags": {"plant": "lyon"},
    "properties": {"desired": {"telemetryInterval": 30}},
}


@pytest.fixture
def service(server: RunningServer) -> Iterator[DeviceProvisioningClient]:
    client = DeviceProvisioningClient.from_connection_string(
        server.connection_string, connection_verify=server.ca_file, retry_total=0
    )
    yield client
    client.close()


def opendps(server: RunningServer, *args: str, expect: int = 0) -> Any:
    """Run `opendps ARGS --json --data-dir <the server's>`; the JSON it printed."""
    proc = subprocess.run(
        [sys.executable, "-m", "opendps", *args, "--json", "--data-dir", str(server.data_dir)],
        capture_output=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def second_hub(server: RunningServer, name: str) -> str:
    """A second built-in hub outside the instance policy, so the other tests' hashed
    allocation still sees only the default hub."""
    host = f"{name}-{server.backend}.builtin-hub.localhost"
    opendps(server, "hub", "add", host, "--no-apply-allocation-policy")
    return host


def test_a_group_key_device_lands_on_the_right_builtin_hub_with_its_initial_twin(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient
) -> None:
    hub = second_hub(server, "done-when")
    group_id = f"tools-{server.backend}-twin"
    group_key = enroll_group(
        service, group_id, allocationPolicy="static", iotHubs=[hub], initialTwin=TWIN
    )
    rid = f"{group_id}-dev"

    # The device derives its key from the group key, as the SDK's group sample does.
    result = register(server, rid, derive_device_key(group_key, rid))

    state = result["registrationState"]
    assert (state["status"], state["assignedHub"], state["deviceId"]) == ("assigned", hub, rid)
    device = opendps(server, "hub", "device", "show", hub, rid)
    assert device["twin"]["tags"] == TWIN["tags"]
    assert device["twin"]["desired"] == TWIN["properties"]["desired"]
    assert device["authenticationKind"] == "sas"
    assert device["authentication"] == {"primaryKey": "***", "secondaryKey": "***"}
    listed = opendps(server, "hub", "devices", hub)
    assert rid in [d["deviceId"] for d in listed]


def test_the_cli_simulator_registers_with_a_group_key(
    server: RunningServer, service: DeviceProvisioningClient
) -> None:
    group_id = f"tools-{server.backend}-sim"
    group_key = enroll_group(service, group_id, initialTwin=TWIN)
    rid = f"{group_id}-dev"

    result = opendps(
        server, "device", "register", "--registration-id", rid, "--group-key", group_key
    )

    assert result["status"] == "assigned"
    assert result["registrationState"]["assignedHub"] == "default.builtin-hub.localhost"
    state = service.device_registration_state.get(id=rid)
    assert (state["status"], state["deviceId"]) == ("assigned", rid)
    wrong = opendps(
        server, "device", "register", "--registration-id", rid, "--group-key",
        derive_device_key(group_key, "another-key"), expect=1,
    )  # fmt: skip
    assert wrong["errorCode"] == 401002


def test_allocation_explain_names_the_hub_the_node_device_then_gets(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient
) -> None:
    hub = second_hub(server, "explain")
    group_id = f"tools-{server.backend}-explain"
    group_key = enroll_group(service, group_id, allocationPolicy="static", iotHubs=[hub])
    rid = f"{group_id}-dev"

    explained = opendps(server, "allocation", "explain", "--registration-id", rid)

    decision = next(d for d in explained["decisions"] if d["enrollmentId"] == group_id)
    assert (decision["allocationPolicy"], decision["policySource"]) == ("static", "enrollment")
    assert decision["assignedHub"] == hub and decision["outcome"] == "assigned"
    with pytest.raises(ResourceNotFoundError):  # the dry run registered nothing
        service.device_registration_state.get(id=rid)
    result = register(server, rid, derive_device_key(group_key, rid))
    assert result["registrationState"]["assignedHub"] == decision["assignedHub"]
