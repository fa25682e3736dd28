"""Allocation explain, the save-time webhook check and built-in hub devices, over the admin
and service APIs on real stores (SQLite, and PostgreSQL when reachable).

The web app and store fixtures are the admin API's (tests/integration/admin_api/conftest.py);
the custom allocation webhook is a real aiohttp server on 127.0.0.1, port 0, over TLS with the
test PKI (the service API accepts only https:// webhooks), called by the engine's own
`WebhookAllocator` wired into the context as app.wiring does.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tests.integration.admin_api import conftest as admin_api_fixtures
from tests.integration.admin_api.conftest import AdminClient, policy_headers
from tests.pki import TestPki, build_test_pki

from opendps.allocation.custom import DRY_RUN_HEADER, WebhookAllocator
from opendps.model.instance import OWNER_POLICY_NAME
from opendps.service_api.context import ServiceContext

# The admin API's fixtures, shared rather than copied: the store (SQLite, PostgreSQL), the
# service context over it and the admin client of the real web app.
store = admin_api_fixtures.store
context = admin_api_fixtures.context
admin = admin_api_fixtures.admin

Answer = Callable[[dict[str, Any]], tuple[int, Any]]
# Webhook timeout in these tests: short, so a test of a slow webhook stays fast.
TEST_WEBHOOK_TIMEOUT_SECONDS = 2.0


@dataclass
class Webhook:
    """A custom allocation webhook that records each request and its dry-run header."""

    url: str = ""
    answer: Answer = lambda body: (200, {"iotHubHostName": body["linkedHubs"][0]})
    received: list[dict[str, Any]] = field(default_factory=list)
    dry_run_headers: list[str | None] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body)
        self.dry_run_headers.append(request.headers.get(DRY_RUN_HEADER))
        status, answer = self.answer(body)
        return web.Response(status=status, text=json.dumps(answer), content_type="application/json")


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return build_test_pki(tmp_path)


@pytest.fixture
async def webhook(pki: TestPki) -> AsyncIterator[Webhook]:
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/api/allocate", hook.handle)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki.server_cert_path, pki.server_key_path)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"https://localhost:{port}/api/allocate?code=function-key"
    try:
        yield hook
    finally:
        await runner.cleanup()


@pytest.fixture
async def allocator(context: ServiceContext, pki: TestPki) -> AsyncIterator[WebhookAllocator]:
    """The engine's webhook client, trusting the test CA, wired into the API context."""
    client_context = ssl.create_default_context(cafile=str(pki.server_ca_path))
    async with aiohttp.ClientSession() as session:
        made = WebhookAllocator(
            session, timeout_seconds=TEST_WEBHOOK_TIMEOUT_SECONDS, ssl_context=client_context
        )
        context.custom_allocator = made
        yield made


async def owner_headers(client: AdminClient) -> dict[str, str]:
    """Service API headers signed with the default instance's owner policy."""
    policy = await client.ok("GET", f"/instances/default/policies/{OWNER_POLICY_NAME}")
    instance = await client.ok("GET", "/instances/default")
    return policy_headers(instance["serviceHostName"], OWNER_POLICY_NAME, policy["primaryKey"])
