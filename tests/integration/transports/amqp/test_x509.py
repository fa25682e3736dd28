"""X.509 devices over AMQP: no SASL layer at all, the TLS client chain is the credential
(protocol.md §4.1), checked by the real engine on a real SQLite store."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from proton import Message
from tests.integration.engine.world import ID_SCOPE, World
from tests.unit.attestation.x509_pki import Issued, device
from tests.unit.transports.amqp.pair import ProtonClient

from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    EnrollmentSpec,
    X509Attestation,
    X509CertificatePair,
)

from .conftest import LOOPBACK, Device, Servers, TlsWire, json_body, register_properties


async def open_with_certificate(servers: Servers, leaf: Issued, tmp_path: Path) -> TlsWire:
    cert, key = tmp_path / "device.pem", tmp_path / "device.key"
    cert.write_text(leaf.pem)
    key.write_bytes(
        leaf.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(servers.pki.server_ca_path)
    context.load_cert_chain(cert, key)
    reader, writer = await asyncio.open_connection(
        LOOPBACK, servers.amqp_port, ssl=context, server_hostname="localhost"
    )
    return TlsWire(reader, writer)


async def test_x509_device_without_sasl_registers_with_its_tls_certificate(
    servers: Servers, world: World, tmp_path: Path
) -> None:
    leaf = device("dev-x509")
    spec = EnrollmentSpec(
        Attestation(
            AttestationType.X509,
            x509=X509Attestation(client_certificates=X509CertificatePair(leaf.record)),
        )
    )
    await world.add_individual("dev-x509", spec)
    address = f"{ID_SCOPE}/registrations/dev-x509"
    device_ = Device(await open_with_certificate(servers, leaf, tmp_path), ProtonClient())
    sender, _receiver = device_.client.open_links(address)
    await device_.until(lambda: sender.credit > 0)

    reply = await device_.request(sender, register_properties(), b"{}", "corr-x")

    assert isinstance(reply, Message)
    body = json_body(reply)
    assert body["status"] == "assigned"
    assert "x509" in body["registrationState"]
    await device_.wire.close()


async def test_x509_device_with_an_unknown_certificate_is_rejected_as_unauthorized(
    servers: Servers, world: World, tmp_path: Path
) -> None:
    stranger = device("dev-stranger")
    address = f"{ID_SCOPE}/registrations/dev-stranger"
    device_ = Device(await open_with_certificate(servers, stranger, tmp_path), ProtonClient())
    sender, _receiver = device_.client.open_links(address)
    await device_.until(lambda: sender.credit > 0)

    outcome = await device_.request(sender, register_properties(), b"{}", "corr-x")

    assert isinstance(outcome, tuple)
    assert outcome[1].name == "amqp:unauthorized-access"
    await device_.wire.close()
