"""Registers one X.509 device with the unmodified Python `azure-iot-device` 2.14.0 SDK over MQTT
(or MQTT over WebSockets) and prints the outcome as JSON. Run in a subprocess per registration:
on failure the SDK stays connected (clients.md §2), so the process exits hard.

Settings in the environment: OPENDPS_HOST, OPENDPS_ID_SCOPE, OPENDPS_REGISTRATION_ID,
OPENDPS_CERT_FILE (PEM: the leaf, then any intermediates), OPENDPS_KEY_FILE, OPENDPS_CA (PEM
file of the dev CA), OPENDPS_WEBSOCKETS=1.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from azure.iot.device import X509, ProvisioningDeviceClient


def main() -> dict[str, Any]:
    env = os.environ
    with open(env["OPENDPS_CA"], encoding="ascii") as handle:
        ca = handle.read()
    client = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host=env["OPENDPS_HOST"],
        registration_id=env["OPENDPS_REGISTRATION_ID"],
        id_scope=env["OPENDPS_ID_SCOPE"],
        x509=X509(  # type: ignore[no-untyped-call]  # the SDK ships no annotations here
            cert_file=env["OPENDPS_CERT_FILE"], key_file=env["OPENDPS_KEY_FILE"]
        ),
        server_verification_cert=ca,
        websockets=env.get("OPENDPS_WEBSOCKETS") == "1",
    )
    try:
        result = client.register()
    except Exception as error:  # the outcome under test
        cause = error.__cause__
        return {
            "error": type(error).__name__,
            "message": str(error),
            "cause": type(cause).__name__ if cause is not None else None,
            "causeMessage": str(cause) if cause is not None else None,
        }
    state = result.registration_state
    if state is None:  # a terminal status without a registration state
        return {"status": result.status, "operationId": result.operation_id}
    return {
        "status": result.status,
        "operationId": result.operation_id,
        "registrationState": {
            "deviceId": state.device_id,
            "assignedHub": state.assigned_hub,
            "substatus": state.sub_status,
        },
    }


if __name__ == "__main__":
    outcome = main()
    sys.stdout.write(json.dumps(outcome))
    sys.stdout.flush()
    os._exit(0)
