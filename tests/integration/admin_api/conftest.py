"""The admin API over real stores (SQLite always, PostgreSQL when reachable) on loopback.

The web app is the one `opendps serve` runs (`app.wiring.build_web_app`: the shared HTTP
middleware, the service API and the admin API), served by aiohttp's TestServer on 127.0.0.1
with an ephemeral port. The default instance is created by the real bootstrap code.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.storefixtures import STORE_KINDS, make_store

from opendps.app.bootstrap import ensure_default_instance
from opendps.app.wiring import build_web_app
from opendps.attestation.sas import build_sas_token
from opendps.engine.ports import RandomIdGenerator, SystemClock
from opendps.model.instance import Instance
from opendps.observability.metrics import Metrics
from opendps.service_api.context import ServiceContext
from opendps.store.interface import Store

ADMIN_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
PUBLIC_HOST = "localhost"
API = "api-version=2021-10-01"


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with make_store(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
async def context(store: Store) -> ServiceContext:
    clock, ids = SystemClock(), RandomIdGenerator()
    await ensure_default_instance(store, clock, ids, service_host=PUBLIC_HOST)
    return ServiceContext(
        store=store,
        clock=clock,
        ids=ids,
        public_hosts=(PUBLIC_HOST,),
        default_instance_name="default",
        admin_key=ADMIN_KEY,
    )


@dataclass
class AdminClient:
    """The test client with the admin key, plus helpers for policy tokens."""

    http: TestClient[Any, Any]
    context: ServiceContext

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> ClientResponse:
        """`/admin/v1{path}` with the admin key unless `headers` says otherwise."""
        return await self.http.request(
            method, "/admin/v1" + path, json=json, data=data, headers=headers or self.admin_headers
        )

    async def ok(self, method: str, path: str, *, status: int = 200, **kwargs: Any) -> Any:
        response = await self.call(method, path, **kwargs)
        text = await response.text()
        assert response.status == status, text
        return await response.json() if text else None

    async def error(self, method: str, path: str, code: int, **kwargs: Any) -> dict[str, Any]:
        """Assert a DPS error with `code` (and its HTTP status); return the body."""
        response = await self.call(method, path, **kwargs)
        body: dict[str, Any] = await response.json()
        assert (response.status, body.get("errorCode")) == (code // 1000, code), body
        assert response.headers["x-ms-error-code"] == str(code)
        return body

    async def instance(self, name: str) -> Instance:
        instance = await self.context.store.get_instance_by_name(name)
        assert instance is not None
        return instance


@pytest.fixture
async def admin(context: ServiceContext) -> AsyncIterator[AdminClient]:
    app = build_web_app(context, Metrics(), max_body_bytes=context.limits.max_body_bytes)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as http:
        yield AdminClient(http, context)


def policy_headers(
    host: str, policy: str, key: str, *, expiry: int | None = None
) -> dict[str, str]:
    """A service SAS token for `policy`, sent with Host = `host` (how an instance is chosen)."""
    se = expiry if expiry is not None else int(datetime.now(UTC).timestamp()) + 3600
    return {"Authorization": build_sas_token(host, key, se, key_name=policy), "Host": host}


# -- certificates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def der_base64(self) -> str:
        return base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()


def issue(
    common_name: str,
    *,
    issuer: Issued | None = None,
    not_after: datetime | None = None,
    sign_with: ec.EllipticCurvePrivateKey | None = None,
) -> Issued:
    """A CA (no issuer) or a certificate issued by `issuer` (signed by `sign_with` if given)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=2))
        .not_valid_after(not_after or now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    signer = sign_with or (issuer.key if issuer else key)
    return Issued(builder.sign(signer, hashes.SHA256()), key)
