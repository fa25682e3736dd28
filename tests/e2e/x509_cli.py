"""X.509 helpers of the end-to-end suite: certificates from `opendps cert`, CA proof of
possession through `opendps certificate` (admin API), X.509 enrollments through the Python
service SDK."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from azure.iot.deviceprovisioning import DeviceProvisioningClient

from tests.e2e.harness import RunningServer


def opendps(*args: str, server: RunningServer | None = None) -> dict[str, Any]:
    """Run the OpenDPS CLI (`--json`, against `server`'s data dir if given); its answer."""
    extra = ["--data-dir", str(server.data_dir)] if server is not None else []
    proc = subprocess.run(
        [sys.executable, "-m", "opendps", *args, "--json", *extra],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def verified_root(server: RunningServer, out: Path, name: str) -> dict[str, str]:
    """A root CA uploaded unverified, then verified by proof of possession, all through the CLI."""
    root = opendps("cert", "create-root", "--out", str(out), "--cn", f"{name} Root")
    uploaded = opendps("certificate", "create", name, "--path", root["certificate"], server=server)
    assert uploaded["isVerified"] is False
    code = opendps("certificate", "generate-verification-code", name, server=server)
    proof = opendps("cert", "create-verification", "--code", code["verificationCode"],
                    "--ca", root["certificate"], "--ca-key", root["key"], "--out", str(out))  # fmt: skip
    verified = opendps("certificate", "verify", name, "--path", proof["certificate"], server=server)
    assert verified["isVerified"] is True
    return root


def device(out: Path, registration_id: str, ca: dict[str, str] | None = None) -> dict[str, str]:
    """`opendps cert create-device`: certificate, key and chain (leaf + intermediates) files."""
    issuer = ["--ca", ca["certificate"], "--ca-key", ca["key"]] if ca is not None else []
    return opendps(
        "cert", "create-device", "--registration-id", registration_id, *issuer, "--out", str(out)
    )


def enroll_x509(service: DeviceProvisioningClient, registration_id: str, certificate: str,
                **fields: Any) -> None:  # fmt: skip
    service.enrollment.create_or_update(
        id=registration_id,
        enrollment={
            "registrationId": registration_id,
            "attestation": {"type": "x509", "x509": {
                "clientCertificates": {"primary": {"certificate": Path(certificate).read_text()}}}},
            **fields,
        },
    )  # fmt: skip


def x509_group(
    service: DeviceProvisioningClient, group_id: str, ca_name: str, **fields: Any
) -> None:
    service.enrollment_group.create_or_update(
        id=group_id,
        enrollment_group={
            "enrollmentGroupId": group_id,
            "attestation": {"type": "x509", "x509": {"caReferences": {"primary": ca_name}}},
            **fields,
        },
    )
