"""Register a device with the unmodified Azure Python device SDK, as in Azure's quickstart.

The only OpenDPS-specific lines: the host is `localhost` and the SDK trusts the dev CA
(`server_verification_cert` takes the PEM *text*). The SDK dials MQTT on 8883, or MQTT over
WebSockets on 443 with PROVISIONING_WEBSOCKETS=1.

Run: PROVISIONING_IDSCOPE="$(opendps status --json | jq -r .idScope)" \
     OPENDPS_CA="$(opendps status --json | jq -r .caCertificate)" \
     PROVISIONING_REGISTRATION_ID=my-device PROVISIONING_SYMMETRIC_KEY=<device or derived key> \
     python register_with_python_sdk.py
(tests/e2e/test_docs_example_mqtt.py runs this file as it is.)
"""

import os

from azure.iot.device import ProvisioningDeviceClient

with open(os.environ["OPENDPS_CA"]) as ca_file:
    dev_ca = ca_file.read()

provisioning_device_client = ProvisioningDeviceClient.create_from_symmetric_key(
    provisioning_host="localhost",
    registration_id=os.environ["PROVISIONING_REGISTRATION_ID"],
    id_scope=os.environ["PROVISIONING_IDSCOPE"],
    symmetric_key=os.environ["PROVISIONING_SYMMETRIC_KEY"],
    server_verification_cert=dev_ca,
    websockets=os.environ.get("PROVISIONING_WEBSOCKETS") == "1",
)
registration_result = provisioning_device_client.register()

print("The complete registration result is")
print(registration_result.registration_state)
if registration_result.status == "assigned":
    print("Assigned hub:", registration_result.registration_state.assigned_hub)
