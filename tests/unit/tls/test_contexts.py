"""build_server_context: what the context negotiates, and how bad files are refused."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from tests import pki as test_pki

from opendps.tls.contexts import (
    SESSION_TIMEOUT_SECONDS,
    TlsSettings,
    build_server_context,
)
from opendps.tls.session import HandshakeCompleted

TLS12 = ssl.TLSVersion.TLSv1_2


def test_context_requests_a_client_certificate_without_requiring_one(server_context):
    assert server_context.get_verify_mode() == SSL.VERIFY_PEER


def test_context_keeps_resumable_sessions_in_a_server_side_cache(server_context):
    assert server_context.get_session_cache_mode() == SSL.SESS_CACHE_SERVER
    assert server_context.get_timeout() == SESSION_TIMEOUT_SECONDS


def test_settings_below_tls12_are_refused():
    with pytest.raises(ValueError, match="below 1.2"):
        TlsSettings(min_version=SSL.TLS1_1_VERSION)


def test_settings_refuse_a_non_positive_session_timeout():
    with pytest.raises(ValueError, match="session_timeout_seconds"):
        TlsSettings(session_timeout_seconds=0)


def test_certificate_request_can_be_turned_off(pki, make_pair, client_context):
    context = build_server_context(
        pki.server_cert_path, pki.server_key_path, TlsSettings(request_client_certificate=False)
    )
    pair = make_pair(client_context(identity=pki.device), server=context)

    [completed] = pair.handshake()

    assert context.get_verify_mode() == SSL.VERIFY_NONE
    assert isinstance(completed, HandshakeCompleted) and completed.peer_chain == ()


def test_chacha20_is_offered_for_devices_without_aes_hardware(make_pair, client_context):
    pair = make_pair(client_context(version=TLS12, ciphers="ECDHE-ECDSA-CHACHA20-POLY1305"))

    [completed] = pair.handshake()

    assert completed.cipher == "ECDHE-ECDSA-CHACHA20-POLY1305"


def test_server_sends_its_chain_so_clients_trusting_only_the_root_verify(pki, make_pair, tmp_path):
    root = test_pki.make_ca("Chained Root")
    intermediate = test_pki.issue(root, "Chained Intermediate", is_ca=True)
    leaf = test_pki.issue(intermediate, "localhost", dns_names=("localhost",))
    cert_path, key_path = leaf.write(tmp_path, "chained-server")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cadata=test_pki.pem(root.certificate).decode())

    pair = make_pair(client, server=build_server_context(cert_path, key_path))

    assert [type(e) for e in pair.handshake()] == [HandshakeCompleted]


def test_rsa_server_key_negotiates_ecdhe_rsa_in_tls12(pki, make_pair, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    identity = _with_key(pki.server_ca, key)
    cert_path, key_path = identity.write(tmp_path, "rsa-server")
    client = test_pki.client_context(pki, version=TLS12)

    pair = make_pair(client, server=build_server_context(cert_path, key_path))

    [completed] = pair.handshake()
    assert completed.cipher.startswith("ECDHE-RSA-")


def test_missing_file_raises_os_error(pki, tmp_path):
    with pytest.raises(FileNotFoundError):
        build_server_context(tmp_path / "absent.pem", pki.server_key_path)


def test_file_without_a_certificate_raises_value_error_naming_it(pki, tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")

    with pytest.raises(ValueError, match="bogus.pem: no PEM certificate"):
        build_server_context(bogus, pki.server_key_path)


def test_key_of_another_certificate_is_refused(pki, tmp_path):
    _, other_key = pki.self_signed_device.write(tmp_path, "other")

    with pytest.raises(ValueError, match="does not match"):
        build_server_context(pki.server_cert_path, other_key)


def test_encrypted_key_is_refused_without_showing_it(pki, tmp_path):
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        pki.server.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret-passphrase"),
        )
    )

    with pytest.raises(ValueError, match="encrypted") as raised:
        build_server_context(pki.server_cert_path, encrypted)
    assert "BEGIN" not in str(raised.value) and raised.value.__cause__ is None


def test_unreadable_key_is_refused(pki, tmp_path):
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")

    with pytest.raises(ValueError, match="no PEM private key"):
        build_server_context(pki.server_cert_path, garbage)


def test_ed25519_key_is_refused(pki, tmp_path):
    key_path = tmp_path / "ed25519.key"
    key_path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    with pytest.raises(ValueError, match="only ECDSA and RSA"):
        build_server_context(pki.server_cert_path, key_path)


def test_cipher_string_selecting_nothing_is_refused(pki):
    with pytest.raises(ValueError, match="no usable TLS 1.2 cipher"):
        build_server_context(
            pki.server_cert_path, pki.server_key_path, TlsSettings(tls12_ciphers="NO-SUCH-CIPHER")
        )


def _with_key(issuer, key):
    """A localhost certificate from `issuer` for an arbitrary (here RSA) key."""
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return test_pki.Identity(certificate, key)
