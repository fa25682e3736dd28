"""Service SAS authentication, rights and tenant isolation (protocol.md §2, §7.4; clients.md §4).

Every refusal is a 401 ProvisioningServiceErrorDetails and leaves the stores unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.integration.service_api.conftest import (
    HOST_A,
    HOST_B,
    KEY_A,
    KEY_A_SECONDARY,
    KEY_B,
    KEY_READER,
    PUBLIC_HOST,
    READER,
    Service,
    assert_dps_error,
)
from tests.storefixtures import make_store

from opendps.attestation.sas import build_sas_token
from opendps.model.errors import RIGHT_MISSING, UNAUTHORIZED
from opendps.store.interface import Store

CREATE = {"registrationId": "auth-dev", "attestation": {"type": "symmetricKey"}}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    # Refusals exercise no store semantics beyond reading a snapshot: SQLite is enough, and the
    # per-test PostgreSQL database would triple this module's run time for no added coverage.
    async with make_store("sqlite", tmp_path) as opened:
        yield opened


async def _refused(
    service: Service, *, error_code: int = UNAUTHORIZED, **call: Any
) -> dict[str, Any]:
    before = await service.snapshot()
    response = await service.call("PUT", "/enrollments/auth-dev", json=CREATE, **call)
    body = await assert_dps_error(response, 401, error_code)
    assert await service.snapshot() == before
    return body


async def test_a_request_without_authorization_is_401(service: Service) -> None:
    await _refused(service, anonymous=True)


async def test_an_expired_token_is_401(service: Service) -> None:
    expired = service.token(
        expiry=service.clock.now()
        - timedelta(seconds=service.ctx.limits.sas_clock_skew_seconds + 1)
    )
    body = await _refused(service, token=expired)
    assert "expired" in body["message"]


async def test_a_token_expired_within_the_clock_skew_is_accepted(service: Service) -> None:
    recent = service.token(expiry=service.clock.now() - timedelta(seconds=30))
    assert (
        await service.call("PUT", "/enrollments/auth-dev", json=CREATE, token=recent)
    ).status == 200


async def test_a_token_signed_with_a_wrong_key_is_401(service: Service) -> None:
    await _refused(service, token=service.token(key="A" * 43 + "="))


async def test_a_token_without_a_signature_is_401(service: Service) -> None:
    expiry = int((service.clock.now() + timedelta(hours=1)).timestamp())
    await _refused(
        service,
        authorization=f"SharedAccessSignature sr={HOST_A}&se={expiry}&skn=provisioningserviceowner",
    )


@pytest.mark.parametrize(
    "authorization",
    [
        "SharedAccessSignature",
        "SharedAccessSignature sr=&sig=&se=",
        "SharedAccessSignature sr=dps-a.example.net&sig=!!&se=soon&skn=provisioningserviceowner",
        "Basic dXNlcjpwYXNz",
        "x" * 5000,
    ],
)
async def test_a_malformed_token_is_401(service: Service, authorization: str) -> None:
    await _refused(service, authorization=authorization)


async def test_an_entra_id_bearer_token_is_401(service: Service) -> None:
    body = await _refused(service, authorization="Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig")
    assert "bearer" in body["message"].lower()


async def test_a_token_naming_no_policy_is_401(service: Service) -> None:
    await _refused(service, token=service.token(policy=None))


async def test_a_token_for_an_unknown_policy_is_401(service: Service) -> None:
    await _refused(service, token=service.token(policy="nosuchpolicy"))


async def test_a_token_for_another_service_host_is_401(service: Service) -> None:
    await _refused(service, token=service.token(sr="evil.example.org"))


async def test_a_policy_without_the_right_is_401003(service: Service) -> None:
    reader = service.token(key=KEY_READER, policy=READER)
    body = await _refused(service, token=reader, error_code=RIGHT_MISSING)
    assert "EnrollmentWrite" in body["message"]
    assert (
        await service.call("POST", "/enrollments/query", json={"query": "*"}, token=reader)
    ).status == 200


async def test_instance_a_key_is_refused_on_instance_b(service: Service) -> None:
    # A valid signature with A's owner key, presented to B (chosen by the Host header).
    await _refused(service, host=HOST_B, token=service.token(sr=HOST_B, key=KEY_A))
    await _refused(service, host=HOST_B, token=service.token(sr=HOST_A, key=KEY_A))


async def test_instance_b_key_writes_only_to_instance_b(service: Service) -> None:
    response = await service.call(
        "PUT",
        "/enrollments/auth-dev",
        json=CREATE,
        host=HOST_B,
        token=service.token(sr=HOST_B, key=KEY_B),
    )
    assert response.status == 200
    assert await service.store.get_individual_enrollment(service.b.id, "auth-dev") is not None
    assert await service.store.get_individual_enrollment(service.a.id, "auth-dev") is None


async def test_without_an_instance_host_the_signing_policy_picks_the_instance(
    service: Service,
) -> None:
    # Node: Host header without the port, sr raw `localhost:59444` (clients.md §4).
    node = service.token(sr=f"{PUBLIC_HOST}:59444", key=KEY_B)
    response = await service.call(
        "PUT", "/enrollments/auth-dev", json=CREATE, host=PUBLIC_HOST, token=node
    )
    assert response.status == 200
    assert await service.store.get_individual_enrollment(service.b.id, "auth-dev") is not None
    # Python: Host with the port, sr `quote_plus`ed (`localhost%3A59444`).
    python = service.token(sr=f"{PUBLIC_HOST}:59444", key=KEY_A, encode_sr=True)
    assert "%3A" in python
    response = await service.call(
        "PUT", "/enrollments/auth-dev", json=CREATE, host=f"{PUBLIC_HOST}:59444", token=python
    )
    assert response.status == 200
    assert await service.store.get_individual_enrollment(service.a.id, "auth-dev") is not None


@pytest.mark.parametrize(
    "sr",
    [
        HOST_A,
        HOST_A.upper(),
        f"{HOST_A}:443",
        f"https://{HOST_A}",
        f"https://{HOST_A}:443/",
        PUBLIC_HOST,
        f"{HOST_A}/enrollments",
    ],
)
@pytest.mark.parametrize("encode_sr", [False, True])
async def test_every_spelling_of_the_service_host_in_sr_is_accepted(
    service: Service, sr: str, encode_sr: bool
) -> None:
    token = service.token(sr=sr, encode_sr=encode_sr)
    response = await service.call(
        "PUT", "/enrollments/auth-dev", json=CREATE, token=token, host=f"{HOST_A}:443"
    )
    assert response.status == 200, await response.text()


async def test_a_token_scoped_to_another_path_is_401(service: Service) -> None:
    await _refused(service, token=service.token(sr=f"{HOST_A}/registrations"))


async def test_the_secondary_key_is_accepted(service: Service) -> None:
    assert (
        await service.call(
            "PUT", "/enrollments/auth-dev", json=CREATE, token=service.token(key=KEY_A_SECONDARY)
        )
    ).status == 200


async def test_the_legacy_client_token_form_is_accepted(service: Service) -> None:
    # azure-iothub-provisioningserviceclient: sr quote_plus'ed, sig quote()d (a '/' stays raw).
    expiry = int((service.clock.now() + timedelta(hours=1)).timestamp())
    token = build_sas_token(
        f"{HOST_A}:443", KEY_A, expiry, key_name="provisioningserviceowner", encode_sr=True
    )
    fields = dict(
        part.split("=", 1) for part in token.removeprefix("SharedAccessSignature ").split("&")
    )
    legacy = f"SharedAccessSignature sr={fields['sr']}&sig={fields['sig'].replace('%2F', '/')}&se={expiry}&skn=provisioningserviceowner"
    assert (
        await service.call("PUT", "/enrollments/auth-dev", json=CREATE, authorization=legacy)
    ).status == 200


async def test_the_authorization_header_and_keys_never_reach_the_logs(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    token = service.token()
    await service.call("PUT", "/enrollments/auth-dev", json=CREATE, token=token)
    await service.call("PUT", "/enrollments/auth-dev", json=CREATE, token=service.token(key=KEY_B))
    text = caplog.text + "".join(repr(getattr(r, "opendps_fields", "")) for r in caplog.records)
    signature = token.split("sig=", 1)[1].split("&", 1)[0]
    assert signature not in text and KEY_A not in text and KEY_B not in text
    assert any(r.getMessage() == "http.request" for r in caplog.records)
