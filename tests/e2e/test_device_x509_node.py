"""X.509 device registration over HTTPS with the unmodified Node device SDK
(azure-iot-provisioning-device + -http + azure-iot-security-x509): the TLS client chain is the
credential (protocol.md §5). Certificates come from `opendps cert`, the CA is uploaded and
verified by proof of possession with `opendps certificate` (admin API), enrollments are made and
registration states read back with the unmodified Python service SDK, hub identities with
`opendps hub device show` (admin API)."""

from __future__ import annotations

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


@pytest.fixture
def service(server: RunningServer) -> Iterator[DeviceProvisioningClient]:
    client = DeviceProvisioningClient.from_connection_string(
        server.connection_string, connection_verify=server.ca_file, retry_total=0
    )
    yield client
    client.close()


def register(server: RunningServer, registration_id: str, files: dict[str, str]) -> dict[str, Any]:
    return run_node(
        "device_register_x509.js",
        ["http"],
        {
            "NODE_EXTRA_CA_CERTS": server.ca_file,
            "OPENDPS_HOST": "localhost",
            "OPENDPS_ID_SCOPE": server.id_scope,
            "OPENDPS_REGISTRATION_ID": registration_id,
            "OPENDPS_CERT_FILE": files["chain"],
            "OPENDPS_KEY_FILE": files["key"],
        },
    )


def test_self_signed_individual_registers_and_its_state_and_hub_identity_read_back(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient, tmp_path: Path
) -> None:
    rid = f"x509-{server.backend}-self"
    files = device(tmp_path, rid)
    enroll_x509(service, rid, files["certificate"], deviceId=f"{rid}-dev")

    state = register(server, rid, files)["registrationState"]

    assert state["status"] == "assigned" and state["deviceId"] == f"{rid}-dev"
    assert state["assignedHub"] == BUILTIN_HUB
    certificate = state["x509"]["certificateInfo"]
    assert certificate["subjectName"].startswith(f"CN={rid}")
    assert "signingCertificateInfo" not in state["x509"]
    stored = service.device_registration_state.get(id=rid)
    assert stored["status"] == "assigned" and stored["etag"] == state["etag"]
    info = service.enrollment.get(id=rid)["attestation"]["x509"]["clientCertificates"]
    assert f"CN={rid}" in info["primary"]["info"]["subjectName"]
    # Hub identity (protocol.md §7.3), read through the admin API: self-signed, thumbprints.
    on_hub = opendps("hub", "device", "show", BUILTIN_HUB, f"{rid}-dev", server=server)
    assert on_hub["authenticationKind"] == "selfSigned"
    assert on_hub["authentication"]["primaryThumbprint"] == certificate["sha256Thumbprint"]


def test_group_through_an_intermediate_of_a_verified_root_registers_devices_without_enrollment(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient, tmp_path: Path
) -> None:
    ca_name = f"x509-{server.backend}-fleet-root"
    root = verified_root(server, tmp_path, ca_name)
    mid = opendps("cert", "create-intermediate", "--ca", root["certificate"],
                  "--ca-key", root["key"], "--out", str(tmp_path))  # fmt: skip
    group_id = f"x509-{server.backend}-fleet"
    x509_group(service, group_id, ca_name)
    rids = [f"x509-{server.backend}-car-{n}" for n in range(2)]

    for rid in rids:
        state = register(server, rid, device(tmp_path, rid, mid))["registrationState"]
        assert state["status"] == "assigned" and state["deviceId"] == rid
        assert state["x509"]["enrollmentGroupId"] == group_id
        signing = state["x509"]["signingCertificateInfo"]
        assert signing["subjectName"].startswith(f"CN={ca_name} Root")

    on_hub = opendps("hub", "device", "show", BUILTIN_HUB, rids[0], server=server)
    assert on_hub["authenticationKind"] == "certificateAuthority"  # CA-signed (§7.3)
    listed = list(service.device_registration_state.query(id=group_id))
    assert sorted(s["registrationId"] for s in listed) == rids
    assert all(s["status"] == "assigned" for s in listed)


def test_device_of_an_unenrolled_ca_is_refused_with_401(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient, tmp_path: Path
) -> None:
    rid = f"x509-{server.backend}-stranger"
    root = opendps("cert", "create-root", "--out", str(tmp_path))

    result = register(server, rid, device(tmp_path, rid, root))

    assert result["statusCode"] == 401 and result["body"]["errorCode"] == 401002
    with pytest.raises(ResourceNotFoundError):
        service.device_registration_state.get(id=rid)


def test_a_certificate_whose_cn_is_another_device_is_refused_with_401(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient, tmp_path: Path
) -> None:
    rid = f"x509-{server.backend}-cn"
    files = device(tmp_path, f"{rid}-other")
    enroll_x509(service, rid, files["certificate"])

    result = register(server, rid, files)

    assert result["statusCode"] == 401 and result["body"]["errorCode"] == 401002


def test_device_of_a_disabled_group_is_refused_with_status_disabled(
    server: RunningServer, node_modules: Path, service: DeviceProvisioningClient, tmp_path: Path
) -> None:
    ca_name = f"x509-{server.backend}-off-root"
    root = verified_root(server, tmp_path, ca_name)
    x509_group(service, f"x509-{server.backend}-off", ca_name, provisioningStatus="disabled")
    rid = f"x509-{server.backend}-off-dev"

    result = register(server, rid, device(tmp_path, rid, root))

    # Node turns any status other than assigned/assigning/failed into an error naming it.
    assert "registrationState" not in result and "disabled" in result["message"]
    assert service.device_registration_state.get(id=rid)["status"] == "disabled"
