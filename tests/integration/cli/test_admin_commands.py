"""`opendps instance|hub|policy|allocation-policy|certificate|audit` against a running server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.integration.cli.conftest import Cli

from opendps.model.instance import OWNER_POLICY_NAME


def test_instances_are_created_listed_shown_and_deleted(cli: Cli) -> None:
    created = cli.json("instance", "create", "contoso", "--allocation-policy", "geoLatency")
    assert (created["name"], created["allocationPolicy"]) == ("contoso", "geoLatency")
    assert [i["name"] for i in cli.json("instance", "list")] == ["contoso", "default"]
    shown = cli.json("instance", "show", "contoso")
    assert shown["idScope"] == created["idScope"]
    assert cli.json("instance", "show", "--instance", "contoso")["idScope"] == created["idScope"]
    assert cli.json("instance", "show")["name"] == "default"
    human = cli.ok("instance", "show", "contoso")
    assert created["idScope"] in human and "contoso.builtin-hub.localhost" in human
    assert "deleted" in cli.ok("instance", "delete", "contoso").lower()
    assert "does not exist" in cli.fails("instance", "show", "contoso")


def test_instance_create_prints_the_new_service_connection_string(cli: Cli) -> None:
    out = cli.ok("instance", "create", "fabrikam")
    assert (
        f"HostName=fabrikam.localhost;SharedAccessKeyName={OWNER_POLICY_NAME};SharedAccessKey="
        in out
    )


def test_hubs_of_the_chosen_instance_are_managed(cli: Cli) -> None:
    cli.ok("instance", "create", "contoso")
    added = cli.json(
        "hub",
        "add",
        "hub-2.example.net",
        "--weight",
        "3",
        "--location",
        "eu",
        "--instance",
        "contoso",
    )
    assert (added["allocationWeight"], added["location"]) == (3, "eu")
    listed = cli.json("hub", "list", "--instance", "contoso")
    assert sorted(h["hostName"] for h in listed) == [
        "contoso.builtin-hub.localhost",
        "hub-2.example.net",
    ]
    assert [h["hostName"] for h in cli.json("hub", "list")] == ["default.builtin-hub.localhost"]
    updated = cli.json(
        "hub",
        "update",
        "hub-2.example.net",
        "--no-apply-allocation-policy",
        "--instance",
        "contoso",
    )
    assert (updated["applyAllocationPolicy"], updated["allocationWeight"]) == (False, 3)
    assert "etag" in cli.fails("hub", "update", "hub-2.example.net", "--weight", "1", "--etag", '"stale"',
                               "--instance", "contoso").lower()  # fmt: skip
    cli.ok("hub", "delete", "hub-2.example.net", "--instance", "contoso")
    assert "not linked" in cli.fails("hub", "show", "hub-2.example.net", "--instance", "contoso")
    assert "allocationWeight" in cli.fails("hub", "add", "hub-3.example.net", "--weight", "0")


def test_policies_are_created_shown_regenerated_and_deleted(cli: Cli) -> None:
    created = cli.json("policy", "create", "enroller", "--rights", "EnrollmentRead,EnrollmentWrite")
    assert created["rights"] == ["EnrollmentRead", "EnrollmentWrite"]
    listed = cli.json("policy", "list")
    assert {p["name"] for p in listed} == {OWNER_POLICY_NAME, "enroller"}
    assert cli.json("policy", "show", "enroller")["primaryKey"] == created["primaryKey"]
    regenerated = cli.json("policy", "regenerate-key", "enroller", "--key", "primary")
    assert regenerated["primaryKey"] != created["primaryKey"]
    assert regenerated["secondaryKey"] == created["secondaryKey"]
    cli.ok("policy", "delete", "enroller")
    assert "last one with ServiceConfig" in cli.fails("policy", "delete", OWNER_POLICY_NAME)
    assert "Unknown right" in cli.fails("policy", "create", "x", "--rights", "Everything")


def test_allocation_policy_is_set_and_shown(cli: Cli) -> None:
    assert cli.json("allocation-policy", "show")["allocationPolicy"] == "hashed"
    custom = cli.json("allocation-policy", "set", "custom", "--webhook-url", "https://alloc.example/api",
                      "--webhook-api-version", "2021-10-01")  # fmt: skip
    assert custom["customAllocationDefinition"] == {
        "webhookUrl": "https://alloc.example/api",
        "apiVersion": "2021-10-01",
    }
    assert cli.json("allocation-policy", "set", "static")["customAllocationDefinition"] is None
    assert "customAllocationDefinition" in cli.fails("allocation-policy", "set", "custom")


def _ca(
    tmp_path: Path, name: str
) -> tuple[Path, Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / f"{name}.cer", tmp_path / f"{name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file, certificate, key


def test_certificate_is_verified_with_a_proof_file(cli: Cli, tmp_path: Path) -> None:
    cert_file, _, ca, ca_key = _ca(tmp_path, "root")
    uploaded = cli.json("certificate", "create", "root", "--path", str(cert_file))
    assert (uploaded["isVerified"], uploaded["subject"]) == (False, "CN=root")
    code = cli.json("certificate", "generate-verification-code", "root")["verificationCode"]
    now = datetime.now(UTC)
    proof = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)]))
        .issuer_name(ca.subject).public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1)).sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    proof_file = tmp_path / "proof.pem"
    proof_file.write_bytes(proof.public_bytes(serialization.Encoding.PEM))
    assert (
        cli.json("certificate", "verify", "root", "--path", str(proof_file))["isVerified"] is True
    )
    assert [c["isVerified"] for c in cli.json("certificate", "list")] == [True]


def test_certificate_is_verified_by_signing_the_proof_locally(cli: Cli, tmp_path: Path) -> None:
    cert_file, key_file, _, _ = _ca(tmp_path, "root")
    cli.ok("certificate", "create", "root", "--path", str(cert_file))
    assert (
        cli.json("certificate", "verify", "root", "--ca-key", str(key_file))["isVerified"] is True
    )
    _, other_key, _, _ = _ca(tmp_path, "other")
    cli.ok("certificate", "create", "second", "--path", str(cert_file))
    assert "does not prove possession" in cli.fails(
        "certificate", "verify", "second", "--ca-key", str(other_key)
    )


def test_certificate_delete_checks_the_etag(cli: Cli, tmp_path: Path) -> None:
    cert_file, _, _, _ = _ca(tmp_path, "root")
    uploaded = cli.json("certificate", "create", "root", "--path", str(cert_file), "--verified")
    assert uploaded["isVerified"] is True
    assert "412002" in cli.fails("certificate", "delete", "root", "--etag", '"stale"')
    cli.ok("certificate", "delete", "root", "--etag", uploaded["etag"])
    assert cli.json("certificate", "list") == []


def test_audit_shows_who_changed_what(cli: Cli) -> None:
    cli.ok("instance", "create", "contoso")
    cli.ok("hub", "add", "hub-9.example.net", "--instance", "contoso")
    entries = cli.json("audit", "--limit", "5")["value"]
    assert [(e["action"], e["instance"], e["actor"]) for e in entries[:2]] == [
        ("hub.add", "contoso", "admin"),
        ("instance.create", "contoso", "admin"),
    ]
    only_default = cli.json("audit", "--instance", "default")["value"]
    assert all(e["instance"] == "default" for e in only_default)
    assert "hub.add" in cli.ok("audit")
