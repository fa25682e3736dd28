"""The DPS service API over real stores (SQLite always, PostgreSQL when reachable) on loopback.

Two instances are created directly in the store: A (the default instance, host
`dps-a.example.net`, two linked hubs, one verified CA, an owner policy and narrower ones) and
B (host `dps-b.example.net`, its own owner key). Requests go through aiohttp's TestServer on
127.0.0.1 with an ephemeral port, under the shared HTTP middleware, and are addressed to an
instance by their Host header unless a test says otherwise.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.storefixtures import STORE_KINDS, make_store
from yarl import URL

from opendps.attestation.sas import build_sas_token
from opendps.engine.ports import RandomIdGenerator
from opendps.model.certificate import CaCertificate
from opendps.model.hub import AllocationPolicy, HubKind, LinkedHub
from opendps.model.instance import ALL_RIGHTS, OWNER_POLICY_NAME, AccessPolicy, Instance, Right
from opendps.service_api.context import ServiceContext, ServiceLimits
from opendps.service_api.http import create_http_middleware
from opendps.service_api.routes import add_service_routes
from opendps.store.interface import Store

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
HOST_A = "dps-a.example.net"
HOST_B = "dps-b.example.net"
PUBLIC_HOST = "localhost"
API = "2021-10-01"
HUB_1 = "hub-1.example.net"
HUB_2 = "hub-2.example.net"
CA_NAME = "root-ca"


def _key(seed: int) -> str:
    return base64.b64encode(bytes([seed]) * 32).decode()


KEY_A = _key(0x11)
KEY_A_SECONDARY = _key(0x12)
KEY_B = _key(0x21)
KEY_READER = _key(0x31)
KEY_REGISTRATIONS = _key(0x41)
READER = "enrollmentreader"
REGISTRATION_READER = "registrationreader"


class FakeClock:
    """Time moved by the test (STYLE §3.4 habit 9): SAS expiry and timestamps are exact."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


def make_certificate(common_name: str, *, is_ca: bool = False) -> str:
    """A self-signed certificate as PEM text."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _instance(instance_id: str, name: str, id_scope: str, host: str) -> Instance:
    return Instance(
        id=instance_id,
        name=name,
        id_scope=id_scope,
        service_host_name=host,
        allocation_policy=AllocationPolicy.HASHED,
        custom_allocation=None,
        etag='"instance"',
        created_at=NOW,
        updated_at=NOW,
    )


def _hub(instance_id: str, host_name: str) -> LinkedHub:
    return LinkedHub(
        instance_id=instance_id,
        host_name=host_name,
        kind=HubKind.BUILTIN,
        created_at=NOW,
        updated_at=NOW,
    )


@dataclass
class Service:
    """A running service API and what a test needs to drive it."""

    client: TestClient[web.Request, web.Application]
    store: Store
    clock: FakeClock
    ctx: ServiceContext
    a: Instance
    b: Instance

    def token(
        self,
        *,
        key: str = KEY_A,
        policy: str | None = OWNER_POLICY_NAME,
        sr: str = HOST_A,
        expiry: datetime | None = None,
        encode_sr: bool = False,
    ) -> str:
        moment = expiry if expiry is not None else self.clock.now() + timedelta(hours=1)
        return build_sas_token(
            sr, key, int(moment.timestamp()), key_name=policy, encode_sr=encode_sr
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        authorization: str | None = None,
        anonymous: bool = False,
        host: str = HOST_A,
        api_version: str | None = API,
        encoded: bool = False,
    ) -> ClientResponse:
        """One request, signed with the A owner key unless `token`/`authorization` say otherwise
        (`anonymous`: no Authorization). `encoded=True` sends `path` with its escapes kept."""
        sent = {"Host": host}
        if not anonymous:
            sent["Authorization"] = authorization or token or self.token()
        sent.update(headers or {})
        query = f"?api-version={api_version}" if api_version is not None else ""
        url = URL(str(self.client.make_url("/")).rstrip("/") + path + query, encoded=encoded)
        return await self.client.session.request(method, url, json=json, data=data, headers=sent)

    async def put_enrollment(self, registration_id: str, **fields: Any) -> dict[str, Any]:
        body = {
            "registrationId": registration_id,
            "attestation": {"type": "symmetricKey"},
            **fields,
        }
        response = await self.call("PUT", f"/enrollments/{registration_id}", json=body)
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result

    async def put_group(self, group_id: str, **fields: Any) -> dict[str, Any]:
        body = {"enrollmentGroupId": group_id, "attestation": {"type": "symmetricKey"}, **fields}
        response = await self.call("PUT", f"/enrollmentGroups/{group_id}", json=body)
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result

    async def snapshot(self) -> dict[str, Any]:
        """Everything a refused request must leave unchanged, for both instances."""
        state: dict[str, Any] = {}
        for instance in (self.a, self.b):
            enrollments = await self.store.list_individual_enrollments(
                instance.id, after=None, limit=10_000
            )
            groups = await self.store.list_enrollment_groups(instance.id, after=None, limit=10_000)
            registrations = await self.store.list_registration_states(
                instance.id, after=None, limit=10_000
            )
            state[instance.id] = (enrollments.items, groups.items, registrations.items)
            state[f"{instance.id}.meters"] = await self.store.list_meters(instance.id)
        state["audit"] = await self.store.list_audit(instance_id=None, before_id=None, limit=10_000)
        return state


async def assert_dps_error(
    response: ClientResponse, status: int, error_code: int
) -> dict[str, Any]:
    """The response is a ProvisioningServiceErrorDetails with this status and code."""
    text = await response.text()
    assert response.status == status, text
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["x-ms-error-code"] == str(error_code)
    body: dict[str, Any] = await response.json()
    assert body["errorCode"] == error_code, body
    assert body["trackingId"] == response.headers["x-ms-request-id"]
    assert (
        body["timestampUtc"].endswith("Z") and isinstance(body["message"], str) and body["message"]
    )
    return body


async def _populate(store: Store) -> tuple[Instance, Instance]:
    a = _instance("inst-a", "default", "0ne0000000A", HOST_A)
    b = _instance("inst-b", "other", "0ne0000000B", HOST_B)
    await store.create_instance(
        a,
        [
            AccessPolicy(a.id, OWNER_POLICY_NAME, KEY_A, KEY_A_SECONDARY, ALL_RIGHTS),
            AccessPolicy(a.id, READER, KEY_READER, KEY_READER, Right.ENROLLMENT_READ),
            AccessPolicy(
                a.id,
                REGISTRATION_READER,
                KEY_REGISTRATIONS,
                KEY_REGISTRATIONS,
                Right.REGISTRATION_STATUS_READ,
            ),
        ],
        [_hub(a.id, HUB_1), _hub(a.id, HUB_2)],
    )
    await store.create_instance(
        b, [AccessPolicy(b.id, OWNER_POLICY_NAME, KEY_B, KEY_B, ALL_RIGHTS)], []
    )
    ca = x509.load_pem_x509_certificate(make_certificate("OpenDPS test root", is_ca=True).encode())
    await store.put_ca_certificate(
        CaCertificate(
            instance_id=a.id,
            name=CA_NAME,
            certificate_pem=ca.public_bytes(serialization.Encoding.PEM).decode(),
            subject=ca.subject.rfc4514_string(),
            sha1_thumbprint=ca.fingerprint(hashes.SHA1()).hex().upper(),
            sha256_thumbprint=ca.fingerprint(hashes.SHA256()).hex().upper(),
            not_before_utc=ca.not_valid_before_utc,
            not_after_utc=ca.not_valid_after_utc,
            is_verified=True,
            etag='"ca"',
            created_at=NOW,
            updated_at=NOW,
        ),
        if_match=None,
    )
    return a, b


# Small limits keep the oversize and paging tests quick while exercising the same code paths.
TEST_LIMITS = ServiceLimits(max_body_bytes=64 * 1024, default_page_size=100, max_page_size=50)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with make_store(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
async def service(store: Store) -> AsyncIterator[Service]:
    a, b = await _populate(store)
    clock = FakeClock(NOW)
    ctx = ServiceContext(
        store=store,
        clock=clock,
        ids=RandomIdGenerator(),
        public_hosts=(PUBLIC_HOST,),
        limits=TEST_LIMITS,
    )
    app = web.Application(
        middlewares=[create_http_middleware(clock)], client_max_size=TEST_LIMITS.max_body_bytes
    )
    add_service_routes(app, ctx)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield Service(client=client, store=store, clock=clock, ctx=ctx, a=a, b=b)
