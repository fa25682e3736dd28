"""`opendps enrollment|enrollment-group|registration|compute-device-key` through the service API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.integration.cli.conftest import CLEAN_ENV, Cli, ThreadedServer
from tests.tpm_keys import EK_A, EK_A_REGISTRATION_ID

from opendps.attestation.symmetric import derive_device_key

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def _self_signed(path: Path, common_name: str) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256())
    )  # fmt: skip
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def test_symmetric_key_enrollment_lifecycle(cli: Cli, tmp_path: Path) -> None:
    twin = tmp_path / "twin.json"
    twin.write_text(json.dumps({"tags": {"room": 7}, "properties": {"desired": {"interval": 30}}}))
    created = cli.json("enrollment", "create", "sensor-001", "--device-id", "sensor-one", "--initial-twin", str(twin),
                       "--iot-edge", "--iot-hubs", "default.builtin-hub.localhost",
                       "--reprovision-policy", "never")  # fmt: skip
    keys = created["attestation"]["symmetricKey"]
    assert len(keys["primaryKey"]) == 88 and keys["primaryKey"] != keys["secondaryKey"]
    assert created["capabilities"] == {"iotEdge": True}
    assert created["reprovisionPolicy"] == {
        "updateHubAssignment": False,
        "migrateDeviceData": False,
    }
    assert created["initialTwin"]["tags"] == {"room": 7}
    shown = cli.json("enrollment", "show", "sensor-001")
    assert "primaryKey" not in shown["attestation"].get("symmetricKey", {})
    with_keys = cli.json("enrollment", "show", "sensor-001", "--show-keys")
    assert with_keys["attestation"]["symmetricKey"] == keys
    updated = cli.json("enrollment", "update", "sensor-001", "--disabled", "--no-iot-edge")
    assert (updated["provisioningStatus"], updated["capabilities"]) == (
        "disabled",
        {"iotEdge": False},
    )
    assert updated["attestation"]["symmetricKey"] == keys  # kept
    assert updated["deviceId"] == "sensor-one"
    assert [e["registrationId"] for e in cli.json("enrollment", "list")] == ["sensor-001"]
    assert "412002" in cli.fails("enrollment", "delete", "sensor-001", "--etag", '"stale"')
    cli.ok("enrollment", "delete", "sensor-001")
    assert "404201" in cli.fails("enrollment", "show", "sensor-001")


def test_given_keys_x509_and_tpm_enrollments(cli: Cli, tmp_path: Path) -> None:
    given = cli.json("enrollment", "create", "keyed", "--primary-key", KEY, "--secondary-key", KEY)
    assert given["attestation"]["symmetricKey"]["primaryKey"] == KEY
    certificate = _self_signed(tmp_path / "device.pem", "x509-device")
    x509_enrollment = cli.json(
        "enrollment", "create", "x509-device", "--certificate", str(certificate)
    )
    info = x509_enrollment["attestation"]["x509"]["clientCertificates"]["primary"]["info"]
    assert info["subjectName"] == "CN=x509-device"
    tpm = cli.json("enrollment", "create", "tpm-device", "--endorsement-key", EK_A)
    assert tpm["attestation"] == {"type": "tpm", "tpm": {"endorsementKey": EK_A}}
    assert "choose one attestation" in cli.fails("enrollment", "create", "both", "--primary-key", KEY,
                                                 "--endorsement-key", EK_A)  # fmt: skip
    assert len(cli.json("enrollment", "list", "--top", "2")) == 2
    human = cli.ok("enrollment", "list")
    assert "x509 (clientCertificates)" in human and "tpm-device" in human


def test_a_tpm_enrollment_defaults_to_the_registration_id_tpm_clients_compute(cli: Cli) -> None:
    tpm = cli.json("enrollment", "create", "--endorsement-key", EK_A)
    assert tpm["registrationId"] == EK_A_REGISTRATION_ID
    for args, message in [
        (("--primary-key", KEY), "may be left out only with --endorsement-key"),
        (("--endorsement-key", KEY), "Invalid value for --endorsement-key"),
    ]:
        result = cli.run("enrollment", "create", *args)
        assert result.exit_code == 2 and message in result.stderr  # a usage error


def test_invalid_settings_are_reported_from_the_server(cli: Cli) -> None:
    assert "not a hub linked" in cli.fails(
        "enrollment", "create", "lost", "--iot-hubs", "nowhere.example.net"
    )
    assert "400001" in cli.fails("enrollment", "create", "bad_id!")


def test_group_with_derived_device_keys_and_registrations(cli: Cli) -> None:
    group = cli.json("enrollment-group", "create", "factory-line-1", "--primary-key", KEY)
    assert group["attestation"]["symmetricKey"]["primaryKey"] == KEY
    device_key = cli.ok(
        "compute-device-key", "--key", KEY, "--registration-id", "sensor-001"
    ).strip()
    assert (
        device_key
        == derive_device_key(KEY, "sensor-001")
        == "Qo/tl0OMJVczFo9NZmMsiSRof5GTI3Bk1I8Pwy2UV2c="
    )
    assert cli.json("registration", "list", "--group", "factory-line-1") == []
    assert "404202" in cli.fails("registration", "show", "sensor-001")
    assert "factory-line-1" in cli.ok("enrollment-group", "list")
    updated = cli.json("enrollment-group", "update", "factory-line-1", "--allocation-policy", "static",
                       "--iot-hubs", "default.builtin-hub.localhost")  # fmt: skip
    assert (updated["allocationPolicy"], updated["iotHubs"]) == (
        "static",
        ["default.builtin-hub.localhost"],
    )
    assert (
        cli.json("enrollment-group", "show", "factory-line-1", "--show-keys")["attestation"][
            "symmetricKey"
        ]["primaryKey"]
        == KEY
    )
    cli.ok("enrollment-group", "delete", "factory-line-1")
    assert "404203" in cli.fails("enrollment-group", "show", "factory-line-1")


def test_group_backed_by_a_verified_ca(cli: Cli, tmp_path: Path) -> None:
    ca = _self_signed(tmp_path / "ca.pem", "Line CA")
    cli.ok("certificate", "create", "line-ca", "--path", str(ca), "--verified")
    group = cli.json("enrollment-group", "create", "ca-group", "--ca-name", "line-ca")
    assert group["attestation"]["x509"]["caReferences"] == {"primary": "line-ca"}
    signing = cli.json("enrollment-group", "create", "signed-group", "--certificate", str(ca))
    assert (
        signing["attestation"]["x509"]["signingCertificates"]["primary"]["info"]["subjectName"]
        == "CN=Line CA"
    )


def test_other_instance_by_name_and_by_connection_string(cli: Cli) -> None:
    created = cli.json("instance", "create", "contoso")
    cli.ok("enrollment", "create", "contoso-1", "--instance", "contoso")
    assert [
        e["registrationId"] for e in cli.json("enrollment", "list", "--instance", "contoso")
    ] == ["contoso-1"]
    assert cli.json("enrollment", "list") == []
    connection = created["ownerPolicy"]["primaryConnectionString"]
    env = {"OPENDPS_CONNECTION_STRING": connection, "OPENDPS_ENDPOINT": _endpoint(cli)}
    assert [i["name"] for i in cli.json("instance", "list", env=env)] == ["contoso"]
    assert [e["registrationId"] for e in cli.json("enrollment", "list", env=env)] == ["contoso-1"]
    assert [h["hostName"] for h in cli.json("hub", "list", env=env)] == [
        "contoso.builtin-hub.localhost"
    ]
    assert "cannot be combined" in cli.fails("enrollment", "list", "--instance", "default", env=env)
    assert "deployment admin key" in cli.fails("instance", "delete", "contoso", env=env)


def _endpoint(cli: Cli) -> str:
    state = json.loads((cli.data_dir / "state.json").read_text())
    return str(state["endpoints"]["https"])


def test_untrusted_server_certificate_is_reported(cli: Cli, tmp_path: Path) -> None:
    other_ca = _self_signed(tmp_path / "other-ca.pem", "Other CA")
    message = cli.fails("instance", "list", "--ca-certificate", str(other_ca))
    assert "TLS" in message and "trusted" in message


def test_missing_data_dir_says_how_to_connect(cli: Cli, tmp_path: Path) -> None:
    message = cli.fails("instance", "list", "--data-dir", str(tmp_path / "nowhere"))
    assert "opendps serve" in message and "--connection-string" in message


def test_opendps_entry_point_carries_the_operator_commands(server: ThreadedServer) -> None:
    env = {key: value for key, value in os.environ.items() if key not in CLEAN_ENV}
    completed = subprocess.run(
        [sys.executable, "-m", "opendps", "instance", "list", "--json", "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert [i["name"] for i in json.loads(completed.stdout)] == ["default"]
