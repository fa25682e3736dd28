"""The unmodified Node service client (azure-iot-provisioning-service 1.11.2) against OpenDPS."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from tests.e2e.harness import RunningServer, run_node
from tests.e2e.pki import issue

pytestmark = pytest.mark.e2e

SCRIPT = "service_scenarios.js"


def _env(server: RunningServer, **extra: str) -> dict[str, str]:
    # The Node service client can only dial 443 and trusts private CAs through this variable.
    return {
        "OPENDPS_CONNECTION_STRING": server.connection_string,
        "NODE_EXTRA_CA_CERTS": server.ca_file,
        **extra,
    }


@pytest.mark.parametrize("kind", ["individual", "group"])
def test_node_client_manages_symmetric_key_enrollments_with_etags(
    server: RunningServer, node_modules: Path, kind: str
) -> None:
    result = run_node(SCRIPT, [f"{kind}-symmetric", f"node-{server.backend}"], _env(server))

    assert result["createStatus"] == 200
    created = result["created"]
    keys = created["attestation"]["symmetricKey"]
    assert len(keys["primaryKey"]) == 88 and len(keys["secondaryKey"]) == 88  # generated, echoed
    assert created["initialTwin"]["tags"] == {"site": "lab"}
    assert created["etag"] and created["createdDateTimeUtc"].endswith("Z")
    assert not result["fetched"]["attestation"]["symmetricKey"].get("primaryKey")  # GET hides keys
    assert result["attestationMechanism"]["symmetricKey"] == keys
    assert result["updated"]["provisioningStatus"] == "disabled"
    assert result["updated"]["etag"] != created["etag"]
    assert result["updated"]["createdDateTimeUtc"] == created["createdDateTimeUtc"]
    assert result["staleUpdate"]["status"] == 412
    assert result["staleUpdate"]["body"]["errorCode"] == 412002
    assert result["staleDelete"]["status"] == 412
    assert result["afterDelete"]["status"] == 404


@pytest.mark.parametrize("kind", ["individual", "group"])
def test_node_client_enrolls_x509_certificates_and_gets_their_info(
    server: RunningServer, node_modules: Path, kind: str, tmp_path: Path
) -> None:
    root = issue("OpenDPS e2e root", is_ca=True)
    device = issue(f"node-{server.backend}-{kind}-x509", issuer=root)
    cert = root if kind == "group" else device
    cert_file, _ = cert.write(tmp_path, "enrolled")

    result = run_node(
        SCRIPT,
        [f"{kind}-x509", f"node-{server.backend}"],
        _env(server, OPENDPS_CERT_PEM_FILE=str(cert_file)),
    )

    x509 = result["fetched"]["attestation"]["x509"]
    slot = x509["signingCertificates" if kind == "group" else "clientCertificates"]["primary"]
    info = slot["info"]
    common_name = cert.certificate.subject.rfc4514_string().split("=", 1)[1]
    assert common_name in info["subjectName"]
    assert info["sha256Thumbprint"] == cert.certificate.fingerprint(hashes.SHA256()).hex().upper()


def test_node_client_pages_queries_with_continuation(
    server: RunningServer, node_modules: Path
) -> None:
    result = run_node(SCRIPT, ["query", f"nodeq-{server.backend}"], _env(server))

    pages = result["pages"]
    assert all(len(page) <= 2 for page in pages)
    seen = [rid for page in pages for rid in page]
    assert len(seen) == len(set(seen))
    assert {f"nodeq-{server.backend}-query-{n}" for n in range(1, 6)} <= set(seen)


def test_node_client_runs_bulk_create_and_delete(server: RunningServer, node_modules: Path) -> None:
    result = run_node(SCRIPT, ["bulk", f"nodeb-{server.backend}"], _env(server))

    assert result["create"]["status"] == 200 and result["create"]["body"]["isSuccessful"] is True
    again = result["createAgain"]["body"]
    assert again["isSuccessful"] is False and len(again["errors"]) == 3
    assert {e["errorCode"] for e in again["errors"]} == {409201}
    assert result["fetched"]["registrationId"] == f"nodeb-{server.backend}-bulk-1"
    assert result["delete"]["body"]["isSuccessful"] is True
    assert result["afterDelete"]["status"] == 404


def test_node_client_gets_404_for_a_missing_registration_state(
    server: RunningServer, node_modules: Path
) -> None:
    result = run_node(SCRIPT, ["registration-missing", f"noder-{server.backend}"], _env(server))

    assert result["missing"]["status"] == 404
    assert result["missing"]["body"]["errorCode"] == 404202
    assert result["groupQuery"] == []
