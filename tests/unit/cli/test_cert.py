"""`opendps cert …`: local certificate tooling whose outputs pass OpenDPS's own X.509 rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from opendps.attestation.ca_proof import load_certificate, verify_proof_of_possession
from opendps.attestation.x509_chain import build_path, check_leaf
from opendps.cli.commands import add_commands

runner = CliRunner()


def _app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _opendps() -> None:
        """Test root."""

    add_commands(root)
    return root


def run(*args: str) -> dict[str, str]:
    result = runner.invoke(_app(), ["cert", *args, "--json"])
    assert result.exit_code == 0, result.output
    files: dict[str, str] = json.loads(result.output)
    return files


def certificates(path: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


def test_root_intermediate_and_device_form_a_chain_the_attestation_rules_accept(
    tmp_path: Path,
) -> None:
    out = str(tmp_path)
    root = run("create-root", "--out", out)
    mid = run("create-intermediate", "--ca", root["certificate"], "--ca-key", root["key"],
              "--out", out)  # fmt: skip
    dev = run("create-device", "--registration-id", "Dev-1", "--ca", mid["certificate"],
              "--ca-key", mid["key"], "--out", out)  # fmt: skip

    chain = certificates(dev["chain"])
    now = datetime.now(UTC)
    check_leaf(chain, "dev-1", now)
    path = build_path(chain, now, certificates(root["certificate"]))
    assert [c.subject for c in path.certificates] == [
        chain[0].subject, chain[1].subject, certificates(root["certificate"])[0].subject,
    ]  # fmt: skip
    assert certificates(dev["certificate"]) == chain[:1]
    assert isinstance(chain[0].public_key(), ec.EllipticCurvePublicKey)
    for key in (root["key"], mid["key"], dev["key"]):
        assert Path(key).stat().st_mode & 0o777 == 0o600


def test_a_device_without_a_ca_is_self_signed_and_rsa_on_request(tmp_path: Path) -> None:
    dev = run("create-device", "--registration-id", "solo", "--rsa", "--out", str(tmp_path))

    [leaf] = certificates(dev["chain"])
    assert leaf.subject == leaf.issuer
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "solo"


def test_the_verification_certificate_proves_possession_of_the_ca(tmp_path: Path) -> None:
    root = run("create-root", "--out", str(tmp_path), "--rsa")
    proof = run("create-verification", "--code", "C0DE42", "--ca", root["certificate"],
                "--ca-key", root["key"], "--out", str(tmp_path))  # fmt: skip

    ca = load_certificate(Path(root["certificate"]).read_text())
    presented = load_certificate(Path(proof["certificate"]).read_text())
    verify_proof_of_possession(ca, presented, "C0DE42", datetime.now(UTC))


def test_existing_files_are_not_overwritten_without_force(tmp_path: Path) -> None:
    run("create-root", "--out", str(tmp_path))
    before = (tmp_path / "root.key").read_bytes()

    refused = runner.invoke(_app(), ["cert", "create-root", "--out", str(tmp_path)])
    forced = runner.invoke(_app(), ["cert", "create-root", "--out", str(tmp_path), "--force"])

    assert refused.exit_code != 0 and "--force" in refused.output
    assert forced.exit_code == 0 and (tmp_path / "root.key").read_bytes() != before


def test_a_registration_id_that_cannot_be_a_cn_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        _app(), ["cert", "create-device", "--registration-id", "d" * 65, "--out", str(tmp_path)]
    )

    assert result.exit_code != 0 and "64" in result.output
    assert not list(tmp_path.iterdir())
