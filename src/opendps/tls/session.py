"""`TlsSession`: the server side of one TLS connection, sans-I/O (STYLE §3.4 habit 1).

Theory of operation. A pyOpenSSL `Connection` is built on memory BIOs, as mitmproxy's TLS layer
does (`mitmproxy/proxy/layers/tls.py`). The caller owns the socket and uses three verbs:

    events = session.receive_data(ciphertext)   # ciphertext in, events out
    session.send(plaintext)                     # plaintext in
    wire = session.data_to_send()               # ciphertext out (handshake, records, alerts)

Events are past-tense records: `HandshakeCompleted` (once, with the client's chain),
`DataReceived`, `CloseNotifyReceived` and `TlsFailed`. Whatever the peer sends, `receive_data`
returns events; a broken or hostile peer ends in `TlsFailed` (after which the session is inert),
never in an exception. Only misuse by the caller (sending before the handshake) raises
`TlsStateError`.

Python work per TLS record is kept small: ciphertext goes into OpenSSL in one `bio_write`, all
plaintext one `receive_data` yields is joined into one `DataReceived`, and `data_to_send` drains
the outgoing BIO in 64 KiB reads (one call unless more than 64 KiB is pending).

No asyncio here (import contract in pyproject.toml); `server.py` is the asyncio driver.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL

__all__ = [
    "CloseNotifyReceived",
    "DataReceived",
    "HandshakeCompleted",
    "TlsEvent",
    "TlsFailed",
    "TlsSession",
    "TlsSessionState",
    "TlsStateError",
]

# Size of one read from the outgoing memory BIO. A memory BIO returns everything pending up to the
# size asked, so a read that comes back shorter proves the BIO empty and saves a second call. A
# handshake flight is a few KiB and a record at most 16 KiB + 256 bytes (RFC 8446 §5.2), so one
# 64 KiB read drains what one `send` or `receive_data` produces in the common case.
BIO_READ_CHUNK = 64 * 1024

# Size of one plaintext read. OpenSSL returns at most one record per read, and a record holds at
# most 16 KiB of plaintext (RFC 8446 §5.1), so one read per record.
RECV_CHUNK = 16 * 1024

# Failure reasons are logged; OpenSSL's reason strings are short, this bounds odd ones.
MAX_REASON_LENGTH = 200


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """The handshake finished; the connection can carry application data."""

    peer_chain: tuple[x509.Certificate, ...]
    """The client's certificates, leaf first then intermediates, exactly as the client sent them
    (empty when it sent none). Nothing here has been verified: attestation judges them."""
    sni: str | None
    """The server name the client asked for (None when it sent none, e.g. for an IP host)."""
    tls_version: str
    """OpenSSL's protocol name: "TLSv1.2" or "TLSv1.3"."""
    cipher: str
    """OpenSSL's cipher name, e.g. "ECDHE-ECDSA-AES128-GCM-SHA256" or "TLS_AES_128_GCM_SHA256"."""


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Application data arrived (all the plaintext of one `receive_data` call)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseNotifyReceived:
    """The peer sent close_notify: it will send no more data."""


@dataclass(frozen=True, slots=True)
class TlsFailed:
    """The handshake or the connection failed; the session will produce no further events.

    `reason` is OpenSSL's short reason ("wrong version number", "no shared cipher", …): safe to
    log, it never holds key material.
    """

    reason: str


TlsEvent = HandshakeCompleted | DataReceived | CloseNotifyReceived | TlsFailed


class TlsSessionState(enum.Enum):
    HANDSHAKING = "handshaking"
    OPEN = "open"
    PEER_CLOSED = "peer_closed"  # close_notify received; we may still send until close()
    CLOSED = "closed"  # close() called
    FAILED = "failed"


class TlsStateError(RuntimeError):
    """The caller used the session in a state that does not allow it (a bug in the caller)."""


# Tuples, not sets: membership in a tuple compares by identity first, while a set would hash the
# member, and Enum.__hash__ is a Python-level call on every record in and out.
_CAN_SEND = (TlsSessionState.OPEN, TlsSessionState.PEER_CLOSED)
_CAN_RECEIVE = (TlsSessionState.HANDSHAKING, TlsSessionState.OPEN)


class TlsSession:
    """The server side of one TLS connection over memory BIOs."""

    __slots__ = ("_connection", "_state")

    def __init__(self, context: SSL.Context) -> None:
        self._connection = SSL.Connection(context, None)
        self._connection.set_accept_state()
        self._state = TlsSessionState.HANDSHAKING

    @property
    def state(self) -> TlsSessionState:
        return self._state

    @property
    def can_send(self) -> bool:
        """True when `send` is allowed: handshake done, not closed by us, not failed."""
        return self._state in _CAN_SEND

    def receive_data(self, data: bytes) -> list[TlsEvent]:
        """Feed ciphertext from the peer; return the events it completes, in order.

        Returns an empty list when more data is needed, and always an empty list once the
        session is closed or failed. Never raises for anything the peer sent. After this call,
        `data_to_send()` may hold bytes to transmit (handshake messages, alerts).
        """
        if self._state not in _CAN_RECEIVE:
            return []
        events: list[TlsEvent] = []
        if data:
            self._connection.bio_write(data)
        if self._state is TlsSessionState.HANDSHAKING and not self._advance_handshake(events):
            return events
        self._read_plaintext(events)
        return events

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt application data; the records are then in `data_to_send()`.

        Raises `TlsStateError` before the handshake completes, after `close()` or a failure.
        """
        if self._state not in _CAN_SEND:
            raise TlsStateError(f"cannot send in state {self._state.value}")
        if not data:
            return
        try:
            self._connection.sendall(data)
        except SSL.Error as error:
            # Memory BIOs never block, so OpenSSL refuses only if the connection is broken.
            self._state = TlsSessionState.FAILED
            raise TlsStateError(f"cannot send: {_describe(error)}") from None

    def data_to_send(self) -> bytes:
        """Return (and forget) the ciphertext waiting to go to the peer; b"" when none."""
        try:
            chunk = self._connection.bio_read(BIO_READ_CHUNK)
        except SSL.WantReadError:
            return b""
        if len(chunk) < BIO_READ_CHUNK:
            return chunk
        return self._drain_outgoing(chunk)

    def close(self) -> None:
        """Start a clean close: queue close_notify (when the handshake is done) for `data_to_send`.

        Idempotent. Data the peer sends afterwards is ignored.
        """
        if self._state in _CAN_SEND:
            try:
                self._connection.shutdown()
            except SSL.Error:
                pass  # the peer has already gone; the transport is closing anyway
        if self._state is not TlsSessionState.FAILED:
            self._state = TlsSessionState.CLOSED

    def _advance_handshake(self, events: list[TlsEvent]) -> bool:
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            return False
        except SSL.Error as error:
            self._fail(events, error)
            return False
        completed = self._handshake_completed()
        if isinstance(completed, TlsFailed):
            self._state = TlsSessionState.FAILED
            events.append(completed)
            return False
        self._state = TlsSessionState.OPEN
        events.append(completed)
        return True

    def _handshake_completed(self) -> HandshakeCompleted | TlsFailed:
        try:
            chain = self._peer_chain()
        except ValueError:
            # OpenSSL accepted a certificate that cryptography's stricter parser refuses.
            return TlsFailed("client certificate cannot be parsed")
        name = self._connection.get_servername()
        return HandshakeCompleted(
            peer_chain=chain,
            sni=None if name is None else name.decode("ascii", "replace"),
            tls_version=self._connection.get_protocol_version_name(),
            cipher=self._connection.get_cipher_name() or "",
        )

    def _peer_chain(self) -> tuple[x509.Certificate, ...]:
        leaf = self._connection.get_peer_certificate(as_cryptography=True)
        if leaf is None:
            return ()
        sent_after_leaf = self._connection.get_peer_cert_chain(as_cryptography=True) or []
        # On the server side OpenSSL keeps the leaf out of the chain (SSL_get_peer_cert_chain(3):
        # "the peer's certificate must be obtained separately"); the client side includes it.
        # Accept both, so that the result is the list as sent whatever the OpenSSL version.
        if sent_after_leaf and sent_after_leaf[0] == leaf:
            return tuple(sent_after_leaf)
        return (leaf, *sent_after_leaf)

    def _read_plaintext(self, events: list[TlsEvent]) -> None:
        chunks: list[bytes] = []
        end: TlsEvent | None = None
        try:
            while True:
                chunks.append(self._connection.recv(RECV_CHUNK))
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self._state = TlsSessionState.PEER_CLOSED
            end = CloseNotifyReceived()
        except SSL.Error as error:
            self._state = TlsSessionState.FAILED
            end = TlsFailed(_describe(error))
        if chunks:
            events.append(DataReceived(chunks[0] if len(chunks) == 1 else b"".join(chunks)))
        if end is not None:
            events.append(end)

    def _drain_outgoing(self, first: bytes) -> bytes:
        chunks = [first]
        try:
            while len(chunks[-1]) == BIO_READ_CHUNK:
                chunks.append(self._connection.bio_read(BIO_READ_CHUNK))
        except SSL.WantReadError:
            pass
        return b"".join(chunks)

    def _fail(self, events: list[TlsEvent], error: SSL.Error) -> None:
        self._state = TlsSessionState.FAILED
        events.append(TlsFailed(_describe(error)))


def _describe(error: SSL.Error) -> str:
    """A short, loggable reason for an OpenSSL failure."""
    if isinstance(error, SSL.ZeroReturnError):
        return "peer closed the connection during the handshake"
    details = error.args[0] if error.args else None
    if isinstance(details, list):
        # pyOpenSSL's error queue entries are (library, function, reason) triples.
        reasons = [str(entry[-1]) for entry in details if isinstance(entry, tuple) and entry]
        if reasons:
            return "; ".join(reasons)[:MAX_REASON_LENGTH]
    return (str(error) or type(error).__name__)[:MAX_REASON_LENGTH]
