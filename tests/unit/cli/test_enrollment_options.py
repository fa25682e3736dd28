"""Enrollment options to DPS bodies: attestation choice and provisioning settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opendps.cli.client import CliError
from opendps.cli.enrollment_options import (
    AttestationOptions,
    ProvisioningOptions,
    ReprovisionPolicyName,
    attestation_summary,
)
from opendps.model.hub import AllocationPolicy

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def test_no_attestation_option_means_none_chosen() -> None:
    assert AttestationOptions().mechanism("individual") is None


def test_symmetric_tpm_and_ca_reference_mechanisms() -> None:
    assert AttestationOptions(primary_key=KEY).mechanism("group") == {
        "type": "symmetricKey", "symmetricKey": {"primaryKey": KEY}}  # fmt: skip
    assert AttestationOptions(endorsement_key=KEY).mechanism("individual") == {
        "type": "tpm", "tpm": {"endorsementKey": KEY}}  # fmt: skip
    assert AttestationOptions(ca_name="root", secondary_ca_name="backup").mechanism("group") == {
        "type": "x509", "x509": {"caReferences": {"primary": "root", "secondary": "backup"}}}  # fmt: skip


def test_certificates_go_to_client_or_signing_certificates_by_kind(tmp_path: Path) -> None:
    pem = tmp_path / "c.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    der = tmp_path / "c.cer"
    der.write_bytes(b"\x30\x82\x01\x00")
    individual = AttestationOptions(certificate=pem, secondary_certificate=der).mechanism(
        "individual"
    )
    assert individual is not None
    pair = individual["x509"]["clientCertificates"]
    assert pair["primary"]["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert pair["secondary"]["certificate"] == "MIIBAA=="  # DER goes as base64
    group = AttestationOptions(certificate=pem).mechanism("group")
    assert group is not None and "signingCertificates" in group["x509"]


def test_conflicting_or_incomplete_attestation_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="choose one"):
        AttestationOptions(primary_key=KEY, endorsement_key=KEY).mechanism("individual")
    with pytest.raises(CliError, match="--ca-name"):
        AttestationOptions(secondary_ca_name="x").mechanism("group")
    with pytest.raises(CliError, match="--certificate"):
        AttestationOptions(secondary_certificate=tmp_path).mechanism("individual")


def test_provisioning_settings_are_written_and_absent_ones_left_alone(tmp_path: Path) -> None:
    twin = tmp_path / "twin.json"
    twin.write_text(json.dumps({"tags": {"a": 1}}))
    body = {"provisioningStatus": "enabled", "iotHubs": ["old"], "capabilities": {"iotEdge": True}}
    ProvisioningOptions(
        initial_twin=twin, reprovision_policy=ReprovisionPolicyName.NEVER, disabled=True
    ).apply(body)
    assert body == {
        "provisioningStatus": "disabled", "iotHubs": ["old"], "capabilities": {"iotEdge": True},
        "initialTwin": {"tags": {"a": 1}},
        "reprovisionPolicy": {"updateHubAssignment": False, "migrateDeviceData": False},
    }  # fmt: skip


def test_webhook_implies_custom_and_another_policy_drops_the_webhook() -> None:
    body: dict[str, object] = {}
    ProvisioningOptions(webhook_url="https://w.example", webhook_api_version="2021-10-01").apply(
        body
    )
    assert body == {"allocationPolicy": "custom",
                    "customAllocationDefinition": {"webhookUrl": "https://w.example", "apiVersion": "2021-10-01"}}  # fmt: skip
    ProvisioningOptions(allocation_policy=AllocationPolicy.HASHED).apply(body)
    assert body == {"allocationPolicy": "hashed"}


def test_twin_file_must_hold_tags_and_properties_only(tmp_path: Path) -> None:
    twin = tmp_path / "twin.json"
    twin.write_text(json.dumps({"desired": {}}))
    with pytest.raises(CliError):
        ProvisioningOptions(initial_twin=twin).apply({})


def test_attestation_summary_names_the_x509_section_and_ca_names() -> None:
    item = {
        "attestation": {
            "type": "x509",
            "x509": {"caReferences": {"primary": "root", "secondary": None}},
        }
    }
    assert attestation_summary(item) == "x509 (caReferences: root)"
    assert attestation_summary({"attestation": {"type": "symmetricKey"}}) == "symmetricKey"
