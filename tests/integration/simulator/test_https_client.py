"""The simulator's HTTPS device client against a scripted TLS server on 127.0.0.1.

The server is aiohttp on a stdlib TLS context with the test PKI (tests/pki.py); it answers
each request from a script and records what the client sent, including the client
certificate the TLS handshake carried.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from tests.pki import TestPki, build_test_pki, pem

from opendps.attestation.sas import parse_sas_token, verify_with_keys
from opendps.simulator.api import DeviceParams
from opendps.simulator.credentials import device_sas_token, group_device_key
from opendps.simulator.https import register_https

SCOPE = "0ne0000000A"
GROUP_KEY = "ZmFrZS1ncm91cC1rZXktZm9yLXRoZS1zaW11bGF0b3ItdGVzdHM="


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any
    peer_certificate: x509.Certificate | None


@dataclass
class ScriptedServer:
    """Answers requests with `answers` in order: (status, body, retry-after or None)."""

    port: int = 0
    answers: list[tuple[int, dict[str, Any], str | None]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                request.headers.get("Authorization"),
                await request.json() if raw else None,
                x509.load_der_x509_certificate(der) if der else None,
            )
        )
        status, body, retry_after = self.answers.pop(0)
        response = web.json_response(body, status=status)
        if retry_after is not None:
            response.headers["retry-after"] = retry_after
        return response


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return build_test_pki(tmp_path)


@pytest.fixture
async def server(pki: TestPki) -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert_path, pki.server_key_path)
    # Ask for a client certificate but do not require one (SAS devices send none).
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=pem(pki.device_root.certificate).decode())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    server_socket = site._server.sockets[0]  # type: ignore[union-attr]
    scripted.port = server_socket.getsockname()[1]
    try:
        yield scripted
    finally:
        await runner.cleanup()


def params(server: ScriptedServer, pki: TestPki, **changes: Any) -> DeviceParams:
    values: dict[str, Any] = {
        "host": "localhost",
        "port": server.port,
        "id_scope": SCOPE,
        "registration_id": "device-1",
        "sas_token": device_sas_token(
            SCOPE, "device-1", group_device_key(GROUP_KEY, "device-1"), now=time.time()
        ),
        "certificate": None,
        "key": None,
        "payload": None,
        "ca_file": pki.server_ca_path,
    }
    values.update(changes)
    return DeviceParams(**values)


ASSIGNED = {
    "operationId": "op-1",
    "status": "assigned",
    "registrationState": {
        "registrationId": "device-1",
        "status": "assigned",
        "assignedHub": "hub-1.example.net",
        "deviceId": "device-1",
    },
}


async def test_an_assigning_answer_is_polled_until_the_registration_is_assigned(
    server: ScriptedServer, pki: TestPki
) -> None:
    server.answers = [
        (202, {"operationId": "op-1", "status": "assigning"}, "0"),
        (202, {"operationId": "op-1", "status": "assigning"}, "0"),
        (200, ASSIGNED, None),
    ]
    outcome = await register_https(params(server, pki, payload={"model": "x1"}))
    assert (outcome.status_code, outcome.assigned) == (200, True)
    assert outcome.body == ASSIGNED
    register, *polls = server.seen
    assert (register.method, register.path) == ("PUT", f"/{SCOPE}/registrations/device-1/register")
    assert register.body == {"registrationId": "device-1", "payload": {"model": "x1"}}
    assert register.query["api-version"]
    assert [(p.method, p.path) for p in polls] == [
        ("GET", f"/{SCOPE}/registrations/device-1/operations/op-1")
    ] * 2
    assert all(
        s.authorization and s.authorization.startswith("SharedAccessSignature ")
        for s in server.seen
    )
    assert all(s.peer_certificate is None for s in server.seen)


async def test_the_client_waits_the_retry_after_the_server_asks_for(
    server: ScriptedServer, pki: TestPki
) -> None:
    server.answers = [
        (202, {"operationId": "op-1", "status": "assigning"}, "1"),
        (200, ASSIGNED, None),
    ]
    started = time.monotonic()
    outcome = await register_https(params(server, pki))
    assert outcome.assigned
    assert time.monotonic() - started >= 1.0


async def test_the_signed_token_names_the_device_and_verifies_with_the_derived_key(
    server: ScriptedServer, pki: TestPki
) -> None:
    server.answers = [(200, ASSIGNED, None)]
    await register_https(params(server, pki))
    token = parse_sas_token(server.seen[0].authorization or "")
    assert token.resource.lower() == f"{SCOPE}/registrations/device-1".lower()
    assert verify_with_keys(token, [group_device_key(GROUP_KEY, "device-1")])


async def test_an_error_answer_ends_the_registration_with_its_status_and_body(
    server: ScriptedServer, pki: TestPki
) -> None:
    error = {"errorCode": 401002, "message": "Unauthorized", "trackingId": "t"}
    server.answers = [(401, error, None)]
    outcome = await register_https(params(server, pki))
    assert (outcome.status_code, outcome.body, outcome.assigned) == (401, error, False)
    assert len(server.seen) == 1


async def test_a_failed_registration_is_not_assigned(server: ScriptedServer, pki: TestPki) -> None:
    failed = {"operationId": "op-1", "status": "failed", "registrationState": {"errorCode": 400208}}
    server.answers = [(200, failed, None)]
    outcome = await register_https(params(server, pki))
    assert (outcome.status, outcome.assigned) == ("failed", False)


async def test_an_x509_device_presents_its_chain_in_the_handshake_and_sends_no_token(
    server: ScriptedServer, pki: TestPki
) -> None:
    certificate, key = pki.client_files(pki.device, "device")
    server.answers = [(401, {"errorCode": 401002, "message": "Unauthorized"}, None)]
    outcome = await register_https(
        params(server, pki, sas_token=None, certificate=certificate, key=key)
    )
    assert outcome.status_code == 401
    seen = server.seen[0]
    assert seen.authorization is None
    assert seen.peer_certificate == pki.device.certificate


async def test_an_unreachable_server_is_an_outcome_without_status(pki: TestPki) -> None:
    unused = ScriptedServer(port=1)  # nothing listens on port 1 of loopback
    outcome = await register_https(params(unused, pki))
    assert outcome.status_code is None
    assert "cannot reach" in outcome.body["message"]


async def test_a_server_the_ca_does_not_vouch_for_fails_tls(
    server: ScriptedServer, pki: TestPki, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(pem(pki.device_root.certificate))
    outcome = await register_https(params(server, pki, ca_file=other))
    assert outcome.status_code is None
    assert server.seen == []
