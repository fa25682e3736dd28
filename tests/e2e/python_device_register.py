"""Registers one device with the unmodified Python `azure-iot-device` 2.14.0 SDK over MQTT
(or MQTT over WebSockets) and prints the outcome as JSON. Run in a subprocess per
registration: on failure the SDK stays connected (clients.md §2), so the process exits hard.

Settings in the environment: OPENDPS_HOST, OPENDPS_ID_SCOPE, OPENDPS_REGISTRATION_ID,
OPENDPS_DEVICE_KEY, OPENDPS_CA (PEM file of the dev CA), OPENDPS_WEBSOCKETS=1,
OPENDPS_EXPIRED_TOKEN=1 (a token signed exactly like the SDK's, expired an hour ago: built
with the SDK's own NonRenewableSasToken pipeline, since `sastoken_ttl` cannot produce one),
OPENDPS_CERT_FILE + OPENDPS_KEY_FILE (X.509: `create_from_x509_certificate`, no SAS).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
from typing import Any

from azure.iot.device import X509, ProvisioningDeviceClient
from azure.iot.device.common.auth import sastoken
from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism
from azure.iot.device.provisioning import pipeline


def expired_client(host: str, scope: str, rid: str, key: str, **config: Any) -> Any:
    uri = urllib.parse.quote(f"{scope}/registrations/{rid}", safe="")
    expiry = int(time.time()) - 3600
    signature = SymmetricKeySigningMechanism(key).sign(f"{uri}\n{expiry}")
    token = (
        f"SharedAccessSignature sr={uri}&sig={urllib.parse.quote(signature, safe='')}&se={expiry}"
    )
    configuration = pipeline.ProvisioningPipelineConfig(
        hostname=host,
        registration_id=rid,
        id_scope=scope,
        sastoken=sastoken.NonRenewableSasToken(token),
        **config,
    )
    return ProvisioningDeviceClient(pipeline.MQTTPipeline(configuration))


def main() -> dict[str, Any]:
    env = os.environ
    host, scope = env["OPENDPS_HOST"], env["OPENDPS_ID_SCOPE"]
    rid, key = env["OPENDPS_REGISTRATION_ID"], env["OPENDPS_DEVICE_KEY"]
    with open(env["OPENDPS_CA"], encoding="ascii") as handle:
        ca = handle.read()
    config: dict[str, Any] = {
        "server_verification_cert": ca,
        "websockets": env.get("OPENDPS_WEBSOCKETS") == "1",
    }
    if env.get("OPENDPS_CERT_FILE"):
        client = ProvisioningDeviceClient.create_from_x509_certificate(
            provisioning_host=host,
            registration_id=rid,
            id_scope=scope,
            x509=X509(env["OPENDPS_CERT_FILE"], env["OPENDPS_KEY_FILE"]),
            **config,
        )
    elif env.get("OPENDPS_EXPIRED_TOKEN") == "1":
        client = expired_client(host, scope, rid, key, **config)
    else:
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host=host, registration_id=rid, id_scope=scope, symmetric_key=key, **config
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
