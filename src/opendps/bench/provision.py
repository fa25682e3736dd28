"""Enrollments for the bench's devices, created the way an operator would.

Individual enrollments go through the admin API's streamed import (admin_api/imports.py), the
fast path for any number of them; a group through the DPS service API (`PUT /enrollmentGroups/
{id}`), signed with the server's owner connection string. Registration states cannot be
imported through any API (only the service writes them), so `--preload` writes them straight
into the database through the store (`preload_registration_states`), as if the devices had
registered before.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import ssl
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from opendps.attestation.sas import build_sas_token
from opendps.bench.server import ServerInfo
from opendps.model.enrollment import AttestationType
from opendps.model.registration import RegistrationState, RegistrationStatus, Substatus
from opendps.store import codec, tables
from opendps.store.postgres import open_postgres_store
from opendps.store.sql import SqlStore
from opendps.store.sqlite import open_sqlite_store

ADMIN_BASE_PATH = "/admin/v1"
SERVICE_API_VERSION = "2021-10-01"
# Enrollments per chunk of the streamed import body.
IMPORT_CHUNK_LINES = 2000
# A million-line import is answered only when it is done.
HTTP_TIMEOUT_SECONDS = 900.0
# Rows per INSERT when preloading registration states: one statement, many parameter sets.
PRELOAD_BATCH_ROWS = 5000
SAS_TTL_SECONDS = 3600
# Device certificates live for the run; backdated so a skewed clock does not refuse them.
DEVICE_CERTIFICATE_VALIDITY = timedelta(days=1)
DEVICE_CERTIFICATE_BACKDATE = timedelta(hours=1)


class ProvisionError(Exception):
    """The server refused to create the bench's enrollments."""


def new_symmetric_key() -> str:
    """A 64-byte base64 key, the size Azure generates."""
    return base64.b64encode(secrets.token_bytes(64)).decode()


class AdminSession:
    """Admin and service API calls to one server (a new HTTPS connection per call)."""

    def __init__(self, info: ServerInfo, dial_host: str) -> None:
        self._info = info
        self._dial_host = dial_host
        self._context = ssl.create_default_context(cafile=str(info.ca_file))
        self._context.check_hostname = False  # dialled by address; the chain is still verified

    def _request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | Iterable[bytes] | None
    ) -> object:
        connection = http.client.HTTPSConnection(
            self._dial_host,
            self._info.https_port,
            context=self._context,
            timeout=HTTP_TIMEOUT_SECONDS,
        )
        try:
            connection.request(
                method,
                path,
                body=body,
                headers={"Accept": "application/json", **headers},
                encode_chunked=body is not None and not isinstance(body, bytes),
            )
            response = connection.getresponse()
            raw = response.read()
        except OSError as err:
            raise ProvisionError(f"{method} {path.split('?')[0]} failed: {err}") from None
        finally:
            connection.close()
        if response.status >= 400:
            raise ProvisionError(
                f"{method} {path.split('?')[0]} answered {response.status}: {raw[:300]!r}"
            )
        return json.loads(raw) if raw else None

    def admin(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None) -> object:
        headers = {
            "Authorization": f"Bearer {self._info.admin_key}",
            "Content-Type": "application/json",
        }
        return self._request(method, ADMIN_BASE_PATH + path, headers, body)

    def default_instance_name(self) -> str:
        listed = self.admin("GET", "/instances")
        assert isinstance(listed, dict)
        for instance in listed["value"]:
            if instance["idScope"] == self._info.id_scope:
                return str(instance["name"])
        raise ProvisionError(f"no instance has the ID scope {self._info.id_scope}")

    def import_individual_enrollments(
        self, names: list[str], key: str, certificates: dict[str, str] | None = None
    ) -> float:
        """Import one enrollment per name: symmetric-key, all sharing `key`, or X.509 with the
        name's certificate from `certificates` (PEM). Returns seconds.

        Raises ProvisionError when any line fails.
        """
        path = "/instances/" + quote(self.default_instance_name(), safe="") + "/enrollments/import"
        lines = (
            _x509_enrollment_lines(names, certificates)
            if certificates is not None
            else _enrollment_lines(names, key)
        )
        started = time.perf_counter()
        result = self.admin("POST", path, lines)
        seconds = time.perf_counter() - started
        assert isinstance(result, dict)
        if result.get("failed"):
            raise ProvisionError(f"the import failed for {result['failed']} enrollment(s)")
        return seconds

    def put_enrollment_group(self, group_id: str, key: str) -> None:
        """Create a symmetric-key group through the DPS service API."""
        if self._info.service_connection_string is None:
            raise ProvisionError("the server's owner policy is gone: cannot sign service calls")
        fields = dict(
            part.split("=", 1) for part in self._info.service_connection_string.split(";")
        )
        host, policy, policy_key = (
            fields["HostName"],
            fields["SharedAccessKeyName"],
            fields["SharedAccessKey"],
        )
        token = build_sas_token(
            host, policy_key, int(time.time()) + SAS_TTL_SECONDS, key_name=policy
        )
        body = {
            "enrollmentGroupId": group_id,
            "attestation": {
                "type": "symmetricKey",
                "symmetricKey": {"primaryKey": key, "secondaryKey": new_symmetric_key()},
            },
        }
        path = f"/enrollmentGroups/{quote(group_id, safe='')}?api-version={SERVICE_API_VERSION}"
        headers = {"Authorization": token, "Host": host, "Content-Type": "application/json"}
        self._request("PUT", path, headers, json.dumps(body).encode())


def _enrollment_lines(names: list[str], key: str) -> Iterator[bytes]:
    attestation = json.dumps({"type": "symmetricKey", "symmetricKey": {"primaryKey": key}})
    for start in range(0, len(names), IMPORT_CHUNK_LINES):
        chunk = names[start : start + IMPORT_CHUNK_LINES]
        yield "".join(
            f'{{"registrationId":"{name}","attestation":{attestation}}}\n' for name in chunk
        ).encode()


def _x509_enrollment_lines(names: list[str], certificates: dict[str, str]) -> Iterator[bytes]:
    for start in range(0, len(names), IMPORT_CHUNK_LINES):
        yield "".join(
            json.dumps(
                {
                    "registrationId": name,
                    "attestation": {
                        "type": "x509",
                        "x509": {
                            "clientCertificates": {"primary": {"certificate": certificates[name]}}
                        },
                    },
                }
            )
            + "\n"
            for name in names[start : start + IMPORT_CHUNK_LINES]
        ).encode()


def write_device_certificates(directory: Path, names: list[str]) -> dict[str, str]:
    """A self-signed ECDSA P-256 certificate per device (CN = registration ID, protocol.md §3),
    written as `<name>.pem` and `<name>.key` for the load generator; returns name → PEM."""
    now = datetime.now(UTC)
    certificates: dict[str, str] = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - DEVICE_CERTIFICATE_BACKDATE)
            .not_valid_after(now + DEVICE_CERTIFICATE_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
        (directory / f"{name}.pem").write_text(pem)
        (directory / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        certificates[name] = pem
    return certificates


async def preload_registration_states(database: str, id_scope: str, names: list[str]) -> float:
    """Write an `assigned` registration state per name into the server's database, in bulk;
    returns seconds. The server keeps running: SQLite (WAL) and PostgreSQL both take a second
    writer. Registration states have no import API, hence this direct path (bench only)."""
    store = await _open_store(database)
    started = time.perf_counter()
    try:
        instance = await store.get_instance_by_id_scope(id_scope)
        if instance is None:
            raise ProvisionError(f"no instance has the ID scope {id_scope}")
        now = datetime.now(UTC)
        for start in range(0, len(names), PRELOAD_BATCH_ROWS):
            rows = [
                codec.registration_state_to_row(
                    RegistrationState(
                        instance_id=instance.id,
                        registration_id=name,
                        attestation_type=AttestationType.SYMMETRIC_KEY,
                        status=RegistrationStatus.ASSIGNED,
                        substatus=Substatus.INITIAL_ASSIGNMENT,
                        assigned_hub="preloaded.bench.invalid",
                        device_id=name,
                        etag=secrets.token_hex(8),
                        created_at=now,
                        updated_at=now,
                    )
                )
                for name in names[start : start + PRELOAD_BATCH_ROWS]
            ]
            async with store.engine.begin() as connection:
                await connection.execute(sa.insert(tables.registration_states), rows)
    finally:
        await store.close()
    return time.perf_counter() - started


async def _open_store(database: str) -> SqlStore:
    if database.startswith("sqlite:"):
        return await open_sqlite_store(Path(database.removeprefix("sqlite:///")))
    return await open_postgres_store(database)
