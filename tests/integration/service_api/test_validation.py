"""Bad input: each refusal is a DPS error body and leaves every store unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.service_api.conftest import HUB_1, Service, assert_dps_error
from tests.storefixtures import make_store

from opendps.model.errors import (
    API_VERSION_MISSING,
    API_VERSION_UNSUPPORTED,
    BODY_TOO_LARGE,
    INVALID_BODY,
    INVALID_CERTIFICATE_FORMAT,
    INVALID_ID,
    INVALID_REGISTRATION_ID,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
)
from opendps.store.interface import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    # Refusals exercise no store semantics beyond reading a snapshot: SQLite is enough, and the
    # per-test PostgreSQL database would triple this module's run time for no added coverage.
    async with make_store("sqlite", tmp_path) as opened:
        yield opened


def _enrollment(**fields: Any) -> dict[str, Any]:
    return {"registrationId": "val-dev", "attestation": {"type": "symmetricKey"}, **fields}


async def _refused(service: Service, status: int, error_code: int, **call: Any) -> dict[str, Any]:
    call.setdefault("json", None)
    method = call.pop("method", "PUT")
    path = call.pop("path", "/enrollments/val-dev")
    before = await service.snapshot()
    body = await assert_dps_error(await service.call(method, path, **call), status, error_code)
    assert await service.snapshot() == before
    return body


@pytest.mark.parametrize("data", [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe\x00"])
async def test_a_malformed_body_is_400(service: Service, data: bytes) -> None:
    await _refused(
        service, 400, INVALID_BODY, data=data, headers={"Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    ("fields", "mentioned"),
    [
        ({"deviceId": 42}, "deviceId"),
        ({"provisioningStatus": True}, "provisioningStatus"),
        ({"capabilities": {"iotEdge": "true"}}, "capabilities.iotEdge"),
        ({"iotHubs": HUB_1}, "iotHubs"),
        ({"initialTwin": {"properties": {"desired": [1]}}}, "initialTwin.properties.desired"),
        ({"reprovisionPolicy": "always"}, "reprovisionPolicy"),
        (
            {"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": 1}}},
            "attestation.symmetricKey.primaryKey",
        ),
    ],
)
async def test_wrong_json_types_are_400_naming_the_field(
    service: Service, fields: dict[str, Any], mentioned: str
) -> None:
    body = await _refused(service, 400, INVALID_BODY, json=_enrollment(**fields))
    assert mentioned in body["message"]


@pytest.mark.parametrize(
    ("fields", "mentioned"),
    [
        ({"attestation": {"type": "password"}}, "attestation.type"),
        ({"provisioningStatus": "paused"}, "provisioningStatus"),
        ({"allocationPolicy": "roundRobin"}, "allocationPolicy"),
    ],
)
async def test_unknown_enum_values_are_400(
    service: Service, fields: dict[str, Any], mentioned: str
) -> None:
    body = await _refused(service, 400, INVALID_BODY, json=_enrollment(**fields))
    assert mentioned in body["message"]


@pytest.mark.parametrize(
    "x509",
    [
        {},
        {"caReferences": {"primary": "root-ca"}},
        {
            "clientCertificates": {"primary": {"certificate": "x"}},
            "signingCertificates": {"primary": {"certificate": "x"}},
        },
    ],
)
async def test_x509_without_exactly_one_fitting_shape_is_400(
    service: Service, x509: dict[str, Any]
) -> None:
    await _refused(
        service, 400, INVALID_BODY, json=_enrollment(attestation={"type": "x509", "x509": x509})
    )


async def test_an_unreadable_certificate_is_400(service: Service) -> None:
    attestation = {
        "type": "x509",
        "x509": {"clientCertificates": {"primary": {"certificate": "not a certificate"}}},
    }
    await _refused(
        service, 400, INVALID_CERTIFICATE_FORMAT, json=_enrollment(attestation=attestation)
    )


@pytest.mark.parametrize(
    "tpm", [None, {}, {"endorsementKey": ""}, {"endorsementKey": "not base64!"}]
)
async def test_tpm_without_a_valid_endorsement_key_is_400(
    service: Service, tpm: dict[str, Any] | None
) -> None:
    attestation: dict[str, Any] = {"type": "tpm"}
    if tpm is not None:
        attestation["tpm"] = tpm
    body = await _refused(service, 400, INVALID_BODY, json=_enrollment(attestation=attestation))
    assert "endorsementKey" in body["message"] or "tpm" in body["message"]


@pytest.mark.parametrize(
    "fields",
    [
        {"iotHubs": ["unlinked.example.net"]},
        {"iotHubs": [HUB_1, "other.example.net"]},
        {"iotHubHostName": "unlinked.example.net"},
    ],
)
async def test_hubs_not_linked_to_the_instance_are_400(
    service: Service, fields: dict[str, Any]
) -> None:
    body = await _refused(service, 400, INVALID_BODY, json=_enrollment(**fields))
    assert "linked" in body["message"]


@pytest.mark.parametrize(
    ("fields", "mentioned"),
    [
        (
            {
                "customAllocationDefinition": {
                    "webhookUrl": "https://a.example.net/x",
                    "apiVersion": "2021-10-01",
                }
            },
            "only allowed",
        ),
        (
            {
                "allocationPolicy": "hashed",
                "customAllocationDefinition": {
                    "webhookUrl": "https://a.example.net",
                    "apiVersion": "2021-10-01",
                },
            },
            "only allowed",
        ),
        ({"allocationPolicy": "custom"}, "needs a customAllocationDefinition"),
        (
            {
                "allocationPolicy": "custom",
                "customAllocationDefinition": {
                    "webhookUrl": "http://a.example.net/x",
                    "apiVersion": "2021-10-01",
                },
            },
            "https",
        ),
        (
            {
                "allocationPolicy": "custom",
                "customAllocationDefinition": {
                    "webhookUrl": "not a url",
                    "apiVersion": "2021-10-01",
                },
            },
            "https",
        ),
        (
            {
                "allocationPolicy": "custom",
                "customAllocationDefinition": {
                    "webhookUrl": "https://a.example.net",
                    "apiVersion": "1999-01-01",
                },
            },
            "apiVersion",
        ),
        (
            {
                "allocationPolicy": "custom",
                "customAllocationDefinition": {"webhookUrl": "https://a.example.net"},
            },
            "apiVersion",
        ),
        ({"allocationPolicy": "static"}, "static"),
    ],
)
async def test_allocation_settings_must_be_consistent(
    service: Service, fields: dict[str, Any], mentioned: str
) -> None:
    body = await _refused(service, 400, INVALID_BODY, json=_enrollment(**fields))
    assert mentioned in body["message"]


async def test_the_body_registration_id_must_match_the_path(service: Service) -> None:
    await _refused(
        service, 400, INVALID_REGISTRATION_ID, json=_enrollment(registrationId="someone-else")
    )
    assert (
        await service.call(
            "PUT", "/enrollments/val-dev", json=_enrollment(registrationId="VAL-DEV")
        )
    ).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/enrollments/-starts-with-dash",
        "/enrollments/has%20space",
        "/enrollments/" + "a" * 129,
        "/enrollments/ends.with.dot.",
    ],
)
async def test_invalid_registration_ids_are_400001(service: Service, path: str) -> None:
    registration_id = path.rsplit("/", 1)[1]
    await _refused(
        service,
        400,
        INVALID_REGISTRATION_ID,
        path=path,
        encoded=True,
        json=_enrollment(registrationId=registration_id),
    )
    await _refused(service, 400, INVALID_REGISTRATION_ID, method="GET", path=path, encoded=True)


async def test_an_invalid_device_id_is_400(service: Service) -> None:
    await _refused(service, 400, INVALID_ID, json=_enrollment(deviceId="bad/device#id"))


async def test_a_body_over_the_limit_is_413_and_stores_nothing(service: Service) -> None:
    huge = _enrollment(initialTwin={"tags": {"blob": "x" * service.ctx.limits.max_body_bytes}})
    await _refused(service, 413, BODY_TOO_LARGE, json=huge)


async def test_a_chunked_body_over_the_limit_is_413_and_stores_nothing(service: Service) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"registrationId": "val-dev", "attestation": {"type": "symmetricKey"}, "initialTwin": {"tags": {"b": "'
        for _ in range(service.ctx.limits.max_body_bytes // 1024 + 1):
            yield b"x" * 1024
        yield b'"}}}'

    await _refused(
        service, 413, BODY_TOO_LARGE, data=chunks(), headers={"Content-Type": "application/json"}
    )  # type: ignore[arg-type]


async def test_a_missing_api_version_is_400002(service: Service) -> None:
    await _refused(service, 400, API_VERSION_MISSING, api_version=None, json=_enrollment())


async def test_an_unknown_api_version_is_400003(service: Service) -> None:
    await _refused(
        service, 400, API_VERSION_UNSUPPORTED, api_version="2016-01-01", json=_enrollment()
    )


@pytest.mark.parametrize(
    "version",
    [
        "2018-09-01-preview",
        "2019-03-31",
        "2021-06-01",
        "2021-10-01",
        "2021-11-01-preview",
        "2022-02-05",
        "2025-07-01-preview",
    ],
)
async def test_every_known_api_version_is_answered(service: Service, version: str) -> None:
    response = await service.call(
        "PUT", "/enrollments/val-dev", json=_enrollment(), api_version=version
    )
    assert response.status == 200


async def test_unknown_paths_and_methods_get_dps_errors(service: Service) -> None:
    await _refused(service, 404, NOT_FOUND, method="GET", path="/nowhere")
    await _refused(service, 404, NOT_FOUND, method="GET", path="/enrollments/a/b/c")
    body = await _refused(
        service, 405, METHOD_NOT_ALLOWED, method="PATCH", path="/enrollments/val-dev"
    )
    assert body["message"]


async def test_encoded_ids_in_the_path_are_decoded(service: Service) -> None:
    response = await service.call(
        "PUT",
        "/enrollments/dev%3Acolon.1",
        encoded=True,
        json=_enrollment(registrationId="dev:colon.1"),
    )
    assert response.status == 200
    fetched = await service.call("GET", "/enrollments/DEV%3ACOLON.1", encoded=True)
    assert (await fetched.json())["registrationId"] == "dev:colon.1"
