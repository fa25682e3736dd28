"""The operator command tree: groups, offline commands, argument checks, proof certificates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from opendps.attestation.ca_proof import load_certificate, verify_proof_of_possession
from opendps.cli.certificates import issue_proof_certificate
from opendps.cli.commands import add_commands

GROUP_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
runner = CliRunner()


def _root() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _opendps() -> None:
        """Test root."""

    add_commands(root)
    return root


ROOT = _root()


def test_every_group_and_command_is_registered() -> None:
    expected = {
        "instance": ["create", "list", "show", "delete"],
        "hub": ["add", "list", "show", "update", "delete"],
        "policy": ["create", "list", "show", "regenerate-key", "delete"],
        "allocation-policy": ["set", "show"],
        "enrollment": ["create", "list", "show", "update", "delete", "import"],
        "enrollment-group": ["create", "list", "show", "update", "delete"],
        "registration": ["list", "show", "delete"],
        "certificate": ["create", "list", "show", "delete", "generate-verification-code", "verify"],
    }
    for group, commands in expected.items():
        help_text = runner.invoke(ROOT, [group, "--help"]).stdout
        for command in commands:
            assert command in help_text, (group, command)
            result = runner.invoke(ROOT, [group, command, "--help"])
            assert result.exit_code == 0 and "--json" in result.stdout, (group, command)
    for command in ("compute-device-key", "audit"):
        assert "--json" in runner.invoke(ROOT, [command, "--help"]).stdout


def test_device_key_is_derived_locally_with_the_protocol_vector() -> None:
    result = runner.invoke(
        ROOT, ["compute-device-key", "--key", GROUP_KEY, "--registration-id", "sensor-001"]
    )
    assert (result.exit_code, result.stdout.strip()) == (
        0,
        "Qo/tl0OMJVczFo9NZmMsiSRof5GTI3Bk1I8Pwy2UV2c=",
    )
    as_json = runner.invoke(
        ROOT,
        ["compute-device-key", "--key", GROUP_KEY, "--registration-id", "sensor-001", "--json"],
    )
    assert json.loads(as_json.stdout) == {
        "registrationId": "sensor-001", "deviceKey": "Qo/tl0OMJVczFo9NZmMsiSRof5GTI3Bk1I8Pwy2UV2c="}  # fmt: skip


@pytest.mark.parametrize(
    ("key", "registration_id", "message"),
    [("not base64!", "sensor-001", "base64"), (GROUP_KEY, "bad id", "Registration ID")],
)
def test_device_key_refuses_bad_input(key: str, registration_id: str, message: str) -> None:
    result = runner.invoke(
        ROOT, ["compute-device-key", "--key", key, "--registration-id", registration_id]
    )
    assert result.exit_code == 1 and message in result.stderr


def test_choices_are_checked_before_anything_is_sent() -> None:
    result = runner.invoke(ROOT, ["policy", "regenerate-key", "owner", "--key", "tertiary"])
    assert result.exit_code == 2
    result = runner.invoke(ROOT, ["enrollment", "create", "d", "--reprovision-policy", "sometimes"])
    assert result.exit_code == 2


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_locally_signed_proof_certificate_passes_proof_of_possession(kind: str) -> None:
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ec"
        else rsa.generate_private_key(65537, 2048)
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Root")])
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    proof = load_certificate(issue_proof_certificate(ca, key, "CODE123", now=now))
    verify_proof_of_possession(ca, proof, "CODE123", now)
