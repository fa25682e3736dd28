"""The simulator's TPM registration over HTTPS (protocol.md §6.2) with a real swtpm, against a
small DPS stand-in on loopback TLS that challenges with `build_authentication_key` and checks
the token with `opendps.attestation.sas`, as the service does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from tests.pki import TestPki, build_test_pki
from tests.tpmsim.swtpm import Swtpm, start_swtpm

from opendps.attestation.sas import parse_sas_token, verify_with_keys
from opendps.attestation.tpm import build_authentication_key, parse_tpm_public_base64
from opendps.simulator.api import DeviceParams, TpmSettings
from opendps.simulator.https import register_https
from opendps.simulator.tpm_device import DEVICE_KEY_HANDLE, TpmDevice

pytest.importorskip("tpm2_pytss", reason="needs the tpm extra: pip install 'opendps[tpm]'")

SCOPE = "0ne00000ABC"
DPS_KEY = bytes(32 * [0x11])
HUB_KEY = bytes(32 * [0x22])


@dataclass
class TpmDps:
    """Challenges a register without a token; assigns one whose token the DPS key signed."""

    port: int = 0
    include_hub_key: bool = True
    tpm: dict[str, str] = field(default_factory=dict)  # the EK and SRK of the register PUT
    seen: list[tuple[str, str | None, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        authorization = request.headers.get("Authorization")
        self.seen.append((request.method, authorization, body))
        if request.method == "PUT":
            self.tpm = body["tpm"]
        ek = parse_tpm_public_base64(self.tpm["endorsementKey"], "EK")
        srk = parse_tpm_public_base64(self.tpm["storageRootKey"], "SRK")
        if authorization is None:
            blob = build_authentication_key(ek, srk, DPS_KEY)
            challenge = {"authenticationKey": base64.b64encode(blob).decode(), "keyName": "x"}
            return web.json_response(challenge, status=401)
        token = parse_sas_token(authorization)
        if not verify_with_keys(token, [base64.b64encode(DPS_KEY).decode()]):
            return web.json_response({"errorCode": 401002}, status=401)
        if request.method == "PUT":
            assigning = {"operationId": "op-1", "status": "assigning"}
            return web.json_response(assigning, status=202, headers={"retry-after": "0"})
        state: dict[str, Any] = {"registrationId": "tpm-dev-1", "status": "assigned"}
        if self.include_hub_key:
            hub_blob = build_authentication_key(ek, srk, HUB_KEY)
            state["tpm"] = {"authenticationKey": base64.b64encode(hub_blob).decode()}
        return web.json_response(
            {"operationId": "op-1", "status": "assigned", "registrationState": state}
        )


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    with start_swtpm(tmp_path / "tpm") as running:
        yield running


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return build_test_pki(tmp_path)


@pytest.fixture
async def dps(pki: TestPki) -> AsyncIterator[TpmDps]:
    stand_in = TpmDps()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stand_in.handle)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert_path, pki.server_key_path)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    stand_in.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield stand_in
    finally:
        await runner.cleanup()


def params(dps: TpmDps, pki: TestPki, swtpm: Swtpm) -> DeviceParams:
    return DeviceParams(
        host="localhost",
        port=dps.port,
        id_scope=SCOPE,
        registration_id="tpm-dev-1",
        sas_token=None,
        certificate=None,
        key=None,
        payload=None,
        ca_file=pki.server_ca_path,
        tpm=TpmSettings(swtpm.tcti),
    )


async def test_a_tpm_device_answers_the_challenge_and_keeps_the_hub_key(
    dps: TpmDps, pki: TestPki, swtpm: Swtpm
) -> None:
    outcome = await register_https(params(dps, pki, swtpm))
    assert outcome.assigned, outcome.body
    assert outcome.tpm_hub_key_handle == DEVICE_KEY_HANDLE
    (first, _, body), (second, token, again), (poll, poll_token, _) = dps.seen
    assert (first, second, poll) == ("PUT", "PUT", "GET")
    assert body == again
    assert set(body) == {"registrationId", "tpm"}
    assert token is not None and poll_token == token
    assert parse_sas_token(token).sr_raw == f"{SCOPE}%2Fregistrations%2Ftpm-dev-1"
    with TpmDevice(swtpm.tcti) as device:  # the hub key replaced the DPS key
        assert device.sign(b"x") == hmac.new(HUB_KEY, b"x", hashlib.sha256).digest()


async def test_assigned_without_the_hub_key_is_not_a_success(
    dps: TpmDps, pki: TestPki, swtpm: Swtpm
) -> None:
    dps.include_hub_key = False
    outcome = await register_https(params(dps, pki, swtpm))
    assert not outcome.assigned
    assert "registrationState.tpm.authenticationKey" in str(outcome.body["message"])
