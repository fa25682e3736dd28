"""A device whose only secret lives in a real software TPM (swtpm) registers with our own
simulator over HTTPS, AMQP and AMQP-WS against the real server stack, and receives its hub key
in the TPM (protocol.md §6). The Node SDK does the same in tests/e2e/test_device_tpm_node.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.engine.world import ID_SCOPE, World, tpm_spec
from tests.tpmsim.swtpm import Swtpm, start_swtpm

from opendps.attestation.tpm import default_registration_id
from opendps.simulator.amqp import register_amqp
from opendps.simulator.api import DeviceParams, RegistrationOutcome, TpmSettings
from opendps.simulator.https import register_https

from .conftest import Servers

pytest.importorskip("tpm2_pytss", reason="needs the tpm extra: pip install 'opendps[tpm]'")

HUB = "hub1.example.net"


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    with start_swtpm(tmp_path / "tpm") as running:
        yield running


def read_keys(swtpm: Swtpm) -> tuple[bytes, bytes]:
    from opendps.simulator.tpm_device import TpmDevice

    with TpmDevice(swtpm.tcti) as tpm:
        keys = tpm.ensure_keys()
    return keys.endorsement_key, keys.storage_root_key


def hmac_in_tpm(swtpm: Swtpm, data: bytes) -> bytes:
    from opendps.simulator.tpm_device import TpmDevice

    with TpmDevice(swtpm.tcti) as tpm:
        return tpm.sign(data)


async def register(
    servers: Servers, swtpm: Swtpm, registration_id: str, transport: str
) -> RegistrationOutcome:
    websocket = transport == "amqp-ws"
    port = servers.amqp_port if transport == "amqp" else servers.https_port
    params = DeviceParams(
        host="localhost",
        port=port,
        id_scope=ID_SCOPE,
        registration_id=registration_id,
        sas_token=None,
        certificate=None,
        key=None,
        payload=None,
        ca_file=servers.pki.server_ca_path,
        tpm=TpmSettings(swtpm.tcti),
    )
    if transport == "https":
        return await register_https(params)
    return await register_amqp(params, websocket=websocket)


@pytest.mark.parametrize("transport", ["https", "amqp", "amqp-ws"])
async def test_a_tpm_device_registers_and_its_tpm_holds_the_hub_key(
    servers: Servers, world: World, swtpm: Swtpm, transport: str
) -> None:
    ek, _ = read_keys(swtpm)
    registration_id = default_registration_id(ek)
    await world.add_individual(registration_id, tpm_spec(base64.b64encode(ek).decode()))

    outcome = await register(servers, swtpm, registration_id, transport)

    assert outcome.assigned, outcome
    assert outcome.body["registrationState"]["assignedHub"] == HUB
    hub_device = await world.store.get_hub_device(HUB, registration_id)
    assert hub_device is not None
    # The key now in the TPM is the hub identity's key: HMACs made inside the TPM verify with it.
    hub_key = base64.b64decode(hub_device.auth["primaryKey"])
    message = b"0ne00000ABC%2Fregistrations%2Fdev\n1767225600"
    assert hmac_in_tpm(swtpm, message) == hmac.new(hub_key, message, hashlib.sha256).digest()


@pytest.mark.parametrize("transport", ["https", "amqp"])
async def test_a_tpm_with_another_endorsement_key_is_refused(
    servers: Servers, world: World, swtpm: Swtpm, transport: str, tmp_path: Path
) -> None:
    with start_swtpm(tmp_path / "other") as other:
        enrolled, _ = read_keys(other)
    await world.add_individual("dev-tpm", tpm_spec(base64.b64encode(enrolled).decode()))

    outcome = await register(servers, swtpm, "dev-tpm", transport)

    assert not outcome.assigned
    if transport == "https":
        assert outcome.status_code == 401 and outcome.body["errorCode"] == 401002, outcome
    else:  # refused inside the TPM SASL exchange (protocol.md §4.4 step 6)
        assert "outcome auth" in str(outcome.body["message"]), outcome
    assert await world.store.get_registration_state(world.instance.id, "dev-tpm") is None
