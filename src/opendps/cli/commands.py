"""The operator command groups of `opendps`, modelled on `az iot dps` (ARCHITECTURE §7).

cli/main.py owns the root app (`serve`, `status`, `--version`) and calls `add_commands`. Every
command here talks HTTPS to a running server (cli/client.py), never to its database, and
takes `--json`.
"""

from __future__ import annotations

import typer

from opendps.bench.cli import add_bench_command
from opendps.cli import (
    allocation,
    cert,
    certificates,
    device,
    enrollments,
    explain,
    groups,
    hubs,
    instances,
    policies,
    registrations,
)
from opendps.cli.audit import add_audit_command
from opendps.cli.device_keys import add_device_key_command


def add_commands(app: typer.Typer) -> None:
    """Add the operator groups and commands to the root `opendps` app."""
    app.add_typer(instances.app, name="instance")
    app.add_typer(hubs.app, name="hub")
    app.add_typer(policies.app, name="policy")
    app.add_typer(allocation.app, name="allocation-policy")
    app.add_typer(explain.app, name="allocation")
    app.add_typer(enrollments.app, name="enrollment")
    app.add_typer(groups.app, name="enrollment-group")
    app.add_typer(registrations.app, name="registration")
    app.add_typer(certificates.app, name="certificate")
    app.add_typer(cert.app, name="cert")
    app.add_typer(device.app, name="device")
    add_device_key_command(app)
    add_audit_command(app)
    add_bench_command(app)
