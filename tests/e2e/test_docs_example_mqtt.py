"""docs/examples/register_with_python_sdk.py (the Azure Python quickstart pointed at localhost
with the dev CA) runs unmodified over MQTT and over MQTT on WebSockets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.iot.deviceprovisioning import DeviceProvisioningClient

from tests.e2e.harness import RunningServer

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "register_with_python_sdk.py"


@pytest.mark.parametrize("websockets", ["0", "1"], ids=["mqtt", "mqtt-ws"])
def test_python_device_sdk_quickstart_registers(server: RunningServer, websockets: str) -> None:
    rid = f"quickstart-{server.backend}-{'ws' if websockets == '1' else 'tcp'}"
    service = DeviceProvisioningClient.from_connection_string(
        server.connection_string, connection_verify=server.ca_file
    )
    created = service.enrollment.create_or_update(
        id=rid,
        enrollment={
            "registrationId": rid,
            "attestation": {"type": "symmetricKey", "symmetricKey": {}},
        },
    )
    env = dict(
        os.environ,
        OPENDPS_CA=server.ca_file,
        PROVISIONING_IDSCOPE=server.id_scope,
        PROVISIONING_REGISTRATION_ID=rid,
        PROVISIONING_SYMMETRIC_KEY=created["attestation"]["symmetricKey"]["primaryKey"],
        PROVISIONING_WEBSOCKETS=websockets,
    )

    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=90
    )

    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("The complete registration result is")
    assert "Assigned hub: default.builtin-hub.localhost" in out.stdout
    assert service.device_registration_state.get(id=rid)["status"] == "assigned"
    service.close()
