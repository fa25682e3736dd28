"""Fixtures for the TLS unit tests: a test PKI and a server session paired with a stdlib client.

`TlsPair` joins a server `TlsSession` and a stdlib `ssl` client over memory BIOs, with no
socket, as mitmproxy's `SSLTest` does (STYLE §3.4 habit 3).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from OpenSSL import SSL
from tests import pki as test_pki

from opendps.tls.contexts import build_server_context
from opendps.tls.session import TlsEvent, TlsSession, TlsSessionState

# A handshake takes 2-3 round trips; more rounds than this means something is stuck.
MAX_ROUNDS = 10

# STYLE §3.4 habit 4: `fast` (Hypothesis' default size) in CI, `deep` before a release:
# HYPOTHESIS_PROFILE=deep pytest tests/unit/tls
settings.register_profile("fast", max_examples=100)
settings.register_profile("deep", max_examples=100_000)
if "HYPOTHESIS_PROFILE" in os.environ:
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


class TlsPair:
    """A server `TlsSession` and a stdlib `ssl` client joined by memory BIOs."""

    def __init__(
        self,
        server_context: SSL.Context,
        client_context: ssl.SSLContext,
        server_hostname: str | None = "localhost",
        session: ssl.SSLSession | None = None,
    ) -> None:
        self.server = TlsSession(server_context)
        self.client_in, self.client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_context.wrap_bio(
            self.client_in, self.client_out, server_hostname=server_hostname, session=session
        )
        self.events: list[TlsEvent] = []  # every server event, in order
        self.client_saw_close_notify = False

    def client_to_server(self) -> list[TlsEvent]:
        data = self.client_out.read()
        events = self.server.receive_data(data) if data else []
        self.events += events
        return events

    def server_to_client(self) -> None:
        data = self.server.data_to_send()
        if data:
            self.client_in.write(data)

    def handshake(self) -> list[TlsEvent]:
        """Run both sides to the end of the handshake; return the server's events.

        A client-side failure raises `ssl.SSLError` (the server's events stay in `events`).
        """
        events: list[TlsEvent] = []
        for _ in range(MAX_ROUNDS):
            try:
                self.client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                client_done = False
            events += self.client_to_server()
            self.server_to_client()
            if client_done and self.server.state is not TlsSessionState.HANDSHAKING:
                return events
        raise AssertionError(f"handshake did not finish; server events: {events}")

    def client_send(self, data: bytes) -> list[TlsEvent]:
        self.client.write(data)
        return self.client_to_server()

    def server_send(self, data: bytes) -> None:
        self.server.send(data)
        self.server_to_client()

    def client_receive(self) -> bytes:
        """All plaintext the client can read now (b"" if none); sets `client_saw_close_notify`
        when the server's close_notify arrives (the stdlib then reads b"")."""
        chunks = []
        try:
            while chunk := self.client.read(65536):
                chunks.append(chunk)
            self.client_saw_close_notify = True
        except ssl.SSLWantReadError:
            pass
        return b"".join(chunks)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return test_pki.build_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def server_context(pki: Any) -> SSL.Context:
    return build_server_context(pki.server_cert_path, pki.server_key_path)


@pytest.fixture(scope="session")
def client_context(pki: Any) -> Callable[..., ssl.SSLContext]:
    """`client_context(identity=None, version=None, ciphers=None)` → stdlib client context."""

    def make(**options: Any) -> ssl.SSLContext:
        context: ssl.SSLContext = test_pki.client_context(pki, **options)
        return context

    return make


@pytest.fixture
def make_pair(server_context: SSL.Context) -> Callable[..., TlsPair]:
    """`make_pair(client_context, server_context=…, server_hostname=…, session=…)`."""

    def make(
        client: ssl.SSLContext,
        *,
        server: SSL.Context | None = None,
        server_hostname: str | None = "localhost",
        session: ssl.SSLSession | None = None,
    ) -> TlsPair:
        return TlsPair(server or server_context, client, server_hostname, session)

    return make
