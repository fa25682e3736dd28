"""The pyOpenSSL server context every OpenDPS TLS port uses (ARCHITECTURE §2, §6).

Device ports must *request* a client certificate without letting OpenSSL judge it: X.509
attestation (protocol.md §5) decides later, so that a bad certificate earns a DPS 401 instead of a
dropped handshake. Python's `ssl` cannot request-without-verifying, hence pyOpenSSL with an
accept-all verify callback, as mitmproxy does (`mitmproxy/net/tls.py::create_client_proxy_context`).

No asyncio here: this module only builds an `OpenSSL.SSL.Context`; `session.py` drives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL, crypto

__all__ = [
    "DEFAULT_TLS_SETTINGS",
    "MIN_TLS_VERSION",
    "SESSION_ID_CONTEXT",
    "SESSION_TIMEOUT_SECONDS",
    "TLS12_CIPHERS",
    "TlsSettings",
    "build_server_context",
]

# ARCHITECTURE §6: TLS 1.2+ on every port. 1.2 is also the ceiling of the Python device SDK, which
# pins PROTOCOL_TLSv1_2 (clients.md "TLS"); Node negotiates 1.3, which stays allowed.
MIN_TLS_VERSION = SSL.TLS1_2_VERSION

# TLS 1.2 suites: ECDHE only (forward secrecy, ARCHITECTURE §6) with AEAD ciphers, for both ECDSA
# server keys (our default, ~20x cheaper handshakes than RSA, ARCHITECTURE §5) and RSA keys an
# operator may bring. ChaCha20 serves devices without AES hardware. This is Mozilla's
# "intermediate" list; TLS 1.3 keeps OpenSSL's default suites, which are all ECDHE + AEAD.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

# OpenSSL refuses to *cache* sessions of a server that asks for client certificates unless a
# session id context is set, and fails the handshake of a client that offers one. Any fixed value
# works; it only has to be the same for every connection of one context.
SESSION_ID_CONTEXT = b"opendps"

# How long a resumable session lives. 300 s is OpenSSL's own default for TLS 1.2: long enough for
# an HTTP device to poll its operation on fresh connections without new handshakes, short enough
# that the server-side cache (OpenSSL's default cap: 20,480 sessions) stays small.
SESSION_TIMEOUT_SECONDS = 300

# Options, each for a reason:
# - NO_TICKET: resume from the server-side cache, never from stateless tickets. A ticket carries
#   only the leaf certificate, so a resumed connection would lose the intermediates the device sent
#   and X.509 group attestation (protocol.md §5: "DPS does not fill gaps") would fail. Cached
#   sessions keep the whole chain in memory. With TLS 1.3 this makes OpenSSL issue stateful tickets.
# - NO_RENEGOTIATION: client-initiated renegotiation is a cheap way to make a server do expensive
#   handshakes, and no DPS client needs it.
# - NO_COMPRESSION: CRIME; OpenSSL builds rarely have it anyway.
_CONTEXT_OPTIONS = SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION

# MODE_RELEASE_BUFFERS frees a connection's record buffers while it is idle: MQTT and AMQP
# devices hold connections open for hours, and each buffer pair is ~34 KiB.
_CONTEXT_MODE = SSL.MODE_RELEASE_BUFFERS


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What a TLS port negotiates. The defaults are right for every OpenDPS port."""

    min_version: int = MIN_TLS_VERSION
    """An `OpenSSL.SSL.TLS1_*_VERSION` constant; below TLS 1.2 is refused (ARCHITECTURE §6)."""
    tls12_ciphers: str = TLS12_CIPHERS
    """OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are OpenSSL's defaults)."""
    request_client_certificate: bool = True
    """Send a CertificateRequest (needed for X.509 attestation on every device port)."""
    session_timeout_seconds: int = SESSION_TIMEOUT_SECONDS
    session_id_context: bytes = SESSION_ID_CONTEXT

    def __post_init__(self) -> None:
        if self.min_version < MIN_TLS_VERSION:
            raise ValueError("TLS versions below 1.2 are not allowed (ARCHITECTURE §6)")
        if self.session_timeout_seconds <= 0:
            raise ValueError("session_timeout_seconds must be positive")


DEFAULT_TLS_SETTINGS = TlsSettings()


def build_server_context(
    certificate_chain: Path,
    private_key: Path,
    settings: TlsSettings = DEFAULT_TLS_SETTINGS,
) -> SSL.Context:
    """Build the server context for one TLS port.

    `certificate_chain` is a PEM file holding the server certificate followed by its chain (sent
    to clients as is); `private_key` is the matching unencrypted PEM key (ECDSA or RSA).

    Raises `OSError` if a file cannot be read and `ValueError` if a file holds no usable
    certificate or key, if they do not match, or if `settings` select no cipher. Messages name the
    file, never its content.
    """
    chain = _load_certificate_chain(certificate_chain)
    key = _load_private_key(private_key)
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    _configure_protocol(context, settings)
    _configure_identity(context, chain, key, certificate_chain)
    _configure_client_certificates(context, settings)
    _configure_sessions(context, settings)
    return context


def _load_certificate_chain(path: Path) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError:
        raise ValueError(f"{path}: no PEM certificate could be read") from None
    return chain


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    # Errors are re-raised without their cause: nothing derived from key material is shown.
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except TypeError:
        raise ValueError(f"{path}: the private key is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{path}: no PEM private key could be read") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{path}: only ECDSA and RSA server keys are supported")
    return key


def _configure_protocol(context: SSL.Context, settings: TlsSettings) -> None:
    context.set_min_proto_version(settings.min_version)
    context.set_options(_CONTEXT_OPTIONS)
    context.set_mode(_CONTEXT_MODE)
    try:
        context.set_cipher_list(settings.tls12_ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        raise ValueError(f"no usable TLS 1.2 cipher in {settings.tls12_ciphers!r}") from None


def _configure_identity(
    context: SSL.Context,
    chain: list[x509.Certificate],
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    chain_path: Path,
) -> None:
    context.use_certificate(chain[0])
    for certificate in chain[1:]:
        context.add_extra_chain_cert(certificate)
    try:
        context.use_privatekey(key)  # OpenSSL checks the key against the certificate here
        context.check_privatekey()
    except SSL.Error:
        raise ValueError(f"{chain_path}: the private key does not match the certificate") from None


def _configure_client_certificates(context: SSL.Context, settings: TlsSettings) -> None:
    if not settings.request_client_certificate:
        context.set_verify(SSL.VERIFY_NONE)
        return
    # VERIFY_PEER alone *requests* a certificate; without VERIFY_FAIL_IF_NO_PEER_CERT a client
    # may send none (symmetric-key and TPM devices). No CA name list is configured, so the
    # CertificateRequest names no issuer and clients send whatever chain they hold.
    context.set_verify(SSL.VERIFY_PEER, _accept_any_certificate)


def _accept_any_certificate(
    connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int, ok: int
) -> bool:
    # Unknown issuers, self-signed and expired certificates all pass here: attestation judges the
    # chain against enrollments later (protocol.md §5). The client still proves possession of its
    # key through CertificateVerify, which OpenSSL checks regardless of this callback.
    return True


def _configure_sessions(context: SSL.Context, settings: TlsSettings) -> None:
    context.set_session_id(settings.session_id_context)
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_timeout(settings.session_timeout_seconds)
    # Accepting the server name (the callback returns normally) makes OpenSSL store it in the
    # session, so `get_servername()` also answers on a resumed TLS 1.2 connection.
    context.set_tlsext_servername_callback(_accept_server_name)


def _accept_server_name(connection: SSL.Connection) -> None:
    # One certificate serves every name; the HTTP layer routes on the Host header, not on SNI.
    return None
