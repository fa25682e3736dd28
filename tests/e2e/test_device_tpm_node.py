"""TPM device registration with the unmodified Node device SDK (azure-iot-security-tpm on tss.js,
with the HTTP, AMQP and AMQP-WS transports) against a real software TPM (protocol.md §6): swtpm
behind the Microsoft-simulator bridge of tests/tpmsim, one per test, so every test has its own
EK. Enrollments are made and registration states read back with the unmodified Python service
SDK, hub identities with `opendps hub device show` (admin API), and the key the SDK imported is
used inside the TPM with tpm2-tools."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.iot.deviceprovisioning import DeviceProvisioningClient

from tests.e2e.harness import RunningServer, run_node
from tests.e2e.x509_cli import opendps
from tests.tpmsim.mssim_bridge import start_bridge
from tests.tpmsim.swtpm import Swtpm, start_swtpm

pytestmark = pytest.mark.e2e

BUILTIN_HUB = "default.builtin-hub.localhost"
SCRIPT = "device_register_tpm.js"
ALL_TRANSPORTS = ["http", "amqp", "amqpws"]
# Refusals are decided before the transport matters; one request/response and one stream
# transport keep the suite short (it runs once per store backend).
REFUSAL_TRANSPORTS = ["http", "amqp"]
# A refused device (no enrollment, another EK) still gets a challenge, for a key the server
# does not keep (engine/tpm.py), and is refused when it presents its token. That is also what
# lets the Node AMQP transport report the refusal: azure-iot-provisioning-device-amqp 1.9.x
# never calls back for a SASL refusal that comes before the first challenge.
UNKNOWN_DEVICE_TRANSPORTS = ["http", "amqp"]
# What the Node SDK calls the refusal: the 401 of the second PUT over HTTPS; over AMQP the
# SASL outcome `auth` after the token, which the transport reports as a failed connection.
REFUSALS = {"http": "UnauthorizedError", "amqp": "NotConnectedError"}
# Where the SDK persists the key it imports from `authenticationKey` (protocol.md §6.3).
HUB_KEY_HANDLE = "0x81000100"
# What the TPM signs to show which key it holds (any fixed bytes do).
PROBE_MESSAGE = b"opendps-e2e-probe"


@dataclass(frozen=True)
class TpmDevice:
    """A software TPM reachable by the Node SDK (`tpm_port`) and by tpm2-tools (`swtpm`)."""

    swtpm: Swtpm
    tpm_port: int

    def keys(self) -> dict[str, str]:
        """EK, SRK and the SDK's default registration ID (the SDK creates EK/SRK if missing)."""
        return run_node(SCRIPT, ["ek", "--tpm-port", str(self.tpm_port)], {})

    def hmac(self, message: bytes) -> str:
        """HMAC-SHA256 of `message` with the key the SDK persisted, computed inside the TPM."""
        proc = subprocess.run(
            ["tpm2_hmac", "-c", HUB_KEY_HANDLE, "-g", "sha256", "--hex", "-T", self.swtpm.tcti],
            input=message,
            capture_output=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc.stdout.decode().strip()


def _start_device(state_dir: Path) -> Iterator[TpmDevice]:
    with start_swtpm(state_dir) as swtpm, start_bridge(swtpm) as bridge:
        yield TpmDevice(swtpm, bridge.command_port)


@pytest.fixture
def tpm(tmp_path: Path) -> Iterator[TpmDevice]:
    if shutil.which("tpm2_hmac") is None:
        pytest.skip("tpm2-tools is not installed (Debian package `tpm2-tools`)")
    yield from _start_device(tmp_path / "tpm")


@pytest.fixture
def other_tpm(tmp_path: Path) -> Iterator[TpmDevice]:
    """A second TPM, hence a second EK, for a device that is not the enrolled one."""
    yield from _start_device(tmp_path / "other-tpm")


@pytest.fixture
def service(server: RunningServer) -> Iterator[DeviceProvisioningClient]:
    client = DeviceProvisioningClient.from_connection_string(
        server.connection_string, connection_verify=server.ca_file, retry_total=0
    )
    yield client
    client.close()


def default_registration_id(endorsement_key: str) -> str:
    """protocol.md §6.1: lower-case base32 of SHA-256 of the EK's TPM2B_PUBLIC, unpadded."""
    digest = hashlib.sha256(base64.b64decode(endorsement_key)).digest()
    return base64.b32encode(digest).decode().lower().rstrip("=")


def enroll_tpm(
    service: DeviceProvisioningClient, registration_id: str, endorsement_key: str, **fields: Any
) -> None:
    service.enrollment.create_or_update(
        id=registration_id,
        enrollment={
            "registrationId": registration_id,
            "attestation": {"type": "tpm", "tpm": {"endorsementKey": endorsement_key}},
            **fields,
        },
    )


def register(
    server: RunningServer, transport: str, device: TpmDevice, registration_id: str | None = None
) -> dict[str, Any]:
    """One run of the SDK's `register`: {"ok": True, "operationStatus", "registrationState"}
    or {"ok": False, "error"}."""
    args = ["register", "--transport", transport, "--host", "localhost"]
    args += ["--id-scope", server.id_scope, "--tpm-port", str(device.tpm_port)]
    if registration_id is not None:
        args += ["--registration-id", registration_id]
    try:
        return run_node(SCRIPT, args, {"NODE_EXTRA_CA_CERTS": server.ca_file})
    except AssertionError as failure:
        # The SDK dies when its TPM rejects a blob (exit 70) or gives up (timeout): the server
        # log says what it answered.
        tail = "\n".join(server.log_text().splitlines()[-40:])
        raise AssertionError(f"{failure}\n--- server log (tail) ---\n{tail}") from None


def assert_assigned(
    outcome: dict[str, Any], registration_id: str, device_id: str
) -> dict[str, Any]:
    assert outcome["ok"] is True and outcome["operationStatus"] == "assigned", outcome
    state: dict[str, Any] = outcome["registrationState"]
    assert state["status"] == "assigned", state
    assert state["registrationId"] == registration_id
    assert state["deviceId"] == device_id and state["assignedHub"] == BUILTIN_HUB
    # The blob wrapping the hub key the SDK imported (protocol.md §6.2 step 6).
    assert state["tpm"]["authenticationKey"]
    return state


def hub_device(server: RunningServer, device_id: str) -> dict[str, Any]:
    return opendps("hub", "device", "show", BUILTIN_HUB, device_id, server=server)


def refusal_reasons(server: RunningServer, registration_id: str) -> list[str]:
    """The reasons the server logged for refusing this registration ID (`device.unauthorized`:
    the device only learns it was refused, on purpose)."""
    lines = server.log_text().splitlines()
    mark = f" registration_id={registration_id}"
    return [
        line.split('reason="', 1)[1].split('"', 1)[0]
        for line in lines
        if "device.unauthorized" in line and 'reason="' in line and line.endswith(mark)
    ]


def assert_refused_after_the_challenge(outcome: dict[str, Any], transport: str) -> None:
    """The device imported the (decoy) key and was refused when it signed with it."""
    assert outcome["ok"] is False, outcome
    assert outcome["error"]["name"] == REFUSALS[transport], outcome


def hub_device_ids(server: RunningServer) -> list[str]:
    listed = cast(list[dict[str, Any]], opendps("hub", "devices", BUILTIN_HUB, server=server))
    return [str(device["deviceId"]) for device in listed]


def assert_nothing_stored(
    server: RunningServer, service: DeviceProvisioningClient, registration_id: str, device_id: str
) -> None:
    with pytest.raises(ResourceNotFoundError):
        service.device_registration_state.get(id=registration_id)
    assert device_id not in hub_device_ids(server)


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_explicit_registration_id_registers_and_state_and_hub_identity_read_back(
    server: RunningServer,
    node_modules: Path,
    service: DeviceProvisioningClient,
    tpm: TpmDevice,
    transport: str,
) -> None:
    rid = f"tpm-{transport}-{server.backend}-explicit"
    enroll_tpm(service, rid, tpm.keys()["endorsementKey"], deviceId=f"{rid}-dev")

    state = assert_assigned(register(server, transport, tpm, rid), rid, f"{rid}-dev")

    assert state["substatus"] == "initialAssignment"
    stored = service.device_registration_state.get(id=rid)
    assert stored["status"] == "assigned" and stored["etag"] == state["etag"]
    assert stored["deviceId"] == f"{rid}-dev" and stored["assignedHub"] == BUILTIN_HUB
    assert service.enrollment.get(id=rid)["attestation"]["type"] == "tpm"
    # TPM devices get a symmetric-key identity on the hub (protocol.md §7.3); the key itself is
    # masked by the admin API, so the TPM shows it holds a usable HMAC key instead.
    on_hub = hub_device(server, f"{rid}-dev")
    assert on_hub["authenticationKind"] == "sas" and on_hub["status"] == "enabled"
    assert on_hub["authentication"]["primaryKey"] == "***"
    assert len(tpm.hmac(PROBE_MESSAGE)) == 64


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_default_registration_id_registers_and_reregistration_replaces_the_hub_key(
    server: RunningServer,
    node_modules: Path,
    service: DeviceProvisioningClient,
    tpm: TpmDevice,
    transport: str,
) -> None:
    keys = tpm.keys()
    rid = keys["registrationId"]
    assert rid == default_registration_id(keys["endorsementKey"])
    enroll_tpm(service, rid, keys["endorsementKey"])

    first = assert_assigned(register(server, transport, tpm), rid, rid)
    first_key = tpm.hmac(PROBE_MESSAGE)
    first_on_hub = hub_device(server, rid)
    again = assert_assigned(register(server, transport, tpm), rid, rid)
    again_key = tpm.hmac(PROBE_MESSAGE)
    again_on_hub = hub_device(server, rid)

    assert first["substatus"] == "initialAssignment"
    assert again["assignedHub"] == first["assignedHub"]
    # Each registration wraps a fresh hub key: the TPM now holds another one, and the hub
    # identity was rewritten (the built-in hub leaves an unchanged identity as it was).
    assert again["tpm"]["authenticationKey"] != first["tpm"]["authenticationKey"]
    assert again_key != first_key
    assert again_on_hub["authenticationKind"] == "sas"
    assert again_on_hub["etag"] != first_on_hub["etag"]
    assert service.device_registration_state.get(id=rid)["etag"] == again["etag"]


@pytest.mark.parametrize("transport", REFUSAL_TRANSPORTS)
def test_disabled_enrollment_is_refused_with_status_disabled(
    server: RunningServer,
    node_modules: Path,
    service: DeviceProvisioningClient,
    tpm: TpmDevice,
    transport: str,
) -> None:
    rid = f"tpm-{transport}-{server.backend}-disabled"
    enroll_tpm(service, rid, tpm.keys()["endorsementKey"], provisioningStatus="disabled")

    outcome = register(server, transport, tpm, rid)

    # Node turns any status other than assigned/assigning/failed into an error naming it.
    assert outcome["ok"] is False and "disabled" in outcome["error"]["message"], outcome
    assert service.device_registration_state.get(id=rid)["status"] == "disabled"
    assert rid not in hub_device_ids(server)


@pytest.mark.parametrize("transport", UNKNOWN_DEVICE_TRANSPORTS)
def test_unenrolled_device_is_refused_and_nothing_is_stored(
    server: RunningServer,
    node_modules: Path,
    service: DeviceProvisioningClient,
    tpm: TpmDevice,
    transport: str,
) -> None:
    rid = f"tpm-{transport}-{server.backend}-unknown"

    outcome = register(server, transport, tpm, rid)

    assert_refused_after_the_challenge(outcome, transport)
    assert refusal_reasons(server, rid)[0] == "no TPM enrollment"
    assert_nothing_stored(server, service, rid, rid)


@pytest.mark.parametrize("transport", UNKNOWN_DEVICE_TRANSPORTS)
def test_device_whose_tpm_holds_another_ek_is_refused_and_nothing_is_stored(
    server: RunningServer,
    node_modules: Path,
    service: DeviceProvisioningClient,
    tpm: TpmDevice,
    other_tpm: TpmDevice,
    transport: str,
) -> None:
    rid = f"tpm-{transport}-{server.backend}-other-ek"
    enroll_tpm(service, rid, other_tpm.keys()["endorsementKey"])

    # The challenge goes to this TPM's own keys (one wrapped for the enrolled EK would make
    # this TPM refuse it, which the SDK answers by crashing its process).
    outcome = register(server, transport, tpm, rid)

    assert_refused_after_the_challenge(outcome, transport)
    assert refusal_reasons(server, rid)[0] == "endorsement key differs from the enrolled one"
    assert_nothing_stored(server, service, rid, rid)
