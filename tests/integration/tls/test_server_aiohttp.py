"""aiohttp's server running unmodified on the TLS server, as `opendps serve` wires port 443."""

from __future__ import annotations

import asyncio
import hashlib
import ssl

import aiohttp
import pytest
from aiohttp import web
from cryptography.x509.oid import NameOID
from tests import pki as test_pki

from opendps.tls.server import EXTRA_PEER_CHAIN, EXTRA_SNI, EXTRA_TLS_VERSION


def common_name(certificate) -> str:
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


async def whoami(request: web.Request) -> web.Response:
    chain = request.transport.get_extra_info(EXTRA_PEER_CHAIN)
    return web.json_response(
        {
            "chain": [common_name(c) for c in chain],
            "secure": request.secure,
            "scheme": request.scheme,
            "sni": request.transport.get_extra_info(EXTRA_SNI),
            "tls_version": request.transport.get_extra_info(EXTRA_TLS_VERSION),
        }
    )


async def digest(request: web.Request) -> web.Response:
    # Streamed, so that a body bigger than aiohttp's buffers exercises pause/resume_reading.
    hasher, length = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        hasher.update(chunk)
        length += len(chunk)
    return web.json_response({"length": length, "sha256": hasher.hexdigest()})


@pytest.fixture
async def https_port(start):
    """An aiohttp application served through `start_tls_server`; yields its port."""
    app = web.Application()
    app.router.add_get("/whoami", whoami)
    app.router.add_post("/digest", digest)
    runner = web.AppRunner(app)
    await runner.setup()
    server = await start(runner.server)
    yield server.ports[0]
    await runner.cleanup()


async def get_json(context: ssl.SSLContext, url: str, **options) -> dict:
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.request(
            options.pop("method", "GET"), url, server_hostname="localhost", **options
        ) as response:
            assert response.status == 200
            return await response.json()


@pytest.mark.parametrize("with_certificate", [True, False], ids=["device-cert", "no-cert"])
async def test_aiohttp_request_sees_the_client_chain(https_port, pki, with_certificate):
    context = test_pki.client_context(pki, identity=pki.device if with_certificate else None)

    async with asyncio.timeout(10):
        answer = await get_json(context, f"https://127.0.0.1:{https_port}/whoami")

    expected_chain = ["device-1", "OpenDPS Test Device Intermediate"] if with_certificate else []
    assert answer == {
        "chain": expected_chain,
        "secure": True,
        "scheme": "https",
        "sni": "localhost",
        "tls_version": "TLSv1.3",
    }


async def test_aiohttp_reads_a_large_body_and_keeps_the_connection_alive(https_port, pki):
    body = bytes(range(256)) * 8192  # 2 MiB
    context = test_pki.client_context(pki, version=ssl.TLSVersion.TLSv1_2)
    url = f"https://127.0.0.1:{https_port}/digest"

    async with (
        asyncio.timeout(20),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=1)) as http,
    ):
        for _ in range(3):  # one pooled connection, three requests
            async with http.post(url, data=body, server_hostname="localhost") as response:
                answer = await response.json()
            assert answer == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
