"""Fixtures for the TLS server tests: a test PKI, servers on 127.0.0.1 port 0, TLS clients."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from OpenSSL import SSL
from tests import pki as test_pki

from opendps.tls.contexts import build_server_context
from opendps.tls.server import TlsServer, start_tls_server

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return test_pki.build_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def server_context(pki: Any) -> SSL.Context:
    return build_server_context(pki.server_cert_path, pki.server_key_path)


@pytest.fixture
async def start(server_context: SSL.Context) -> AsyncIterator[Callable[..., Awaitable[TlsServer]]]:
    """`await start(inner_factory, **start_tls_server_options)` on 127.0.0.1 port 0; every
    server started is closed and its connections aborted at the end of the test."""
    servers: list[TlsServer] = []

    async def start_server(
        inner_factory: Callable[[], asyncio.Protocol], **options: Any
    ) -> TlsServer:
        options.setdefault("context", server_context)
        server = await start_tls_server(inner_factory, host=LOOPBACK, port=0, **options)
        servers.append(server)
        return server

    yield start_server
    for server in servers:
        server.close()
        server.abort_all()
        await asyncio.wait_for(server.wait_closed(), 5)


@pytest.fixture
def connect(
    pki: Any,
) -> Callable[..., Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    """`await connect(server, identity=None, version=None)` → TLS (reader, writer), SNI localhost."""

    async def open_tls(
        server: TlsServer, **options: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context: ssl.SSLContext = test_pki.client_context(pki, **options)
        return await asyncio.open_connection(
            LOOPBACK, server.ports[0], ssl=context, server_hostname="localhost"
        )

    return open_tls
