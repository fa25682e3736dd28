"""The TLS front door shared by every OpenDPS port (ARCHITECTURE §2).

- `contexts`: builds the pyOpenSSL server context: TLS 1.2+, ECDHE suites, a client certificate
  *requested* and any chain accepted, so that X.509 attestation (not OpenSSL) judges it.
- `session`: `TlsSession`, sans-I/O over memory BIOs: ciphertext in → events
  (`HandshakeCompleted` with the client's chain, `DataReceived`, `CloseNotifyReceived`,
  `TlsFailed`) and ciphertext out.
- `server`: the asyncio driver. It owns the TCP socket, pumps a `TlsSession`, and after the
  handshake hands an ordinary `asyncio.Transport` to the protocol above (aiohttp's server, MQTT,
  AMQP), with the client's chain one `get_extra_info("opendps.peer_chain")` away.

Only the sans-I/O names are re-exported here, so importing `opendps.tls` never pulls in asyncio;
import the driver from `opendps.tls.server`.
"""

from __future__ import annotations

from opendps.tls.contexts import DEFAULT_TLS_SETTINGS, TlsSettings, build_server_context
from opendps.tls.session import (
    CloseNotifyReceived,
    DataReceived,
    HandshakeCompleted,
    TlsEvent,
    TlsFailed,
    TlsSession,
    TlsSessionState,
    TlsStateError,
)

__all__ = [
    "DEFAULT_TLS_SETTINGS",
    "CloseNotifyReceived",
    "DataReceived",
    "HandshakeCompleted",
    "TlsEvent",
    "TlsFailed",
    "TlsSession",
    "TlsSessionState",
    "TlsSettings",
    "TlsStateError",
    "build_server_context",
]
