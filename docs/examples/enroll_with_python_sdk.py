"""Enroll a device group in OpenDPS with the unmodified Azure Python service SDK.

Run: OPENDPS_CONNECTION_STRING="$(opendps status --json | jq -r .serviceConnectionString)" \
     OPENDPS_CA="$(opendps status --json | jq -r .caCertificate)" python enroll_with_python_sdk.py
(tests/e2e/test_docs_examples.py runs this file as it is.)
"""

import os

from azure.iot.deviceprovisioning import DeviceProvisioningClient

client = DeviceProvisioningClient.from_connection_string(
    os.environ["OPENDPS_CONNECTION_STRING"], connection_verify=os.environ["OPENDPS_CA"]
)
group = client.enrollment_group.create_or_update(
    id="factory-line-1",
    enrollment_group={
        "enrollmentGroupId": "factory-line-1",
        "attestation": {"type": "symmetricKey", "symmetricKey": {}},  # keys are generated
        "initialTwin": {"tags": {"line": 1}, "properties": {"desired": {"telemetryInterval": 30}}},
    },
)
keys = client.enrollment_group.get_attestation_mechanism(id="factory-line-1")["symmetricKey"]
print(group["enrollmentGroupId"], group["etag"], "primary key length:", len(keys["primaryKey"]))
