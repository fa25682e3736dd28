"""The asyncio driver of the TLS front door: TCP socket ↔ `TlsSession` ↔ the protocol above.

`start_tls_server` listens on a port. Each accepted connection gets a `_TlsConnection` (the
`asyncio.Protocol` of the TCP transport) that feeds ciphertext to a `TlsSession`, writes what the
session wants sent, and dispatches the session's events. When the handshake completes it builds
the inner protocol from the factory it was given and hands it a `TlsTransport`: an ordinary
`asyncio.Transport` (as the standard library's `sslproto._SSLProtocolTransport` is), so aiohttp's
server, and the MQTT and AMQP protocols, run on top unmodified. The client's chain and the TLS
parameters are in `transport.get_extra_info("opendps.peer_chain")` and friends.

Like mqttproto's `serve_client` and mitmproxy's `server_event` (STYLE §3.4 habit 2) the driver
has no rule of its own: it reads, feeds, dispatches, flushes, and enforces the limits below.

The module is longer than most (~550 lines, half of them docstrings) because its three classes
are one mechanism: `TlsTransport` is a view on `_TlsConnection`, which `TlsServer` counts.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from OpenSSL import SSL

from opendps.observability.logging import log_event
from opendps.tls.session import (
    CloseNotifyReceived,
    DataReceived,
    HandshakeCompleted,
    TlsFailed,
    TlsSession,
)

__all__ = [
    "DEFAULT_TLS_LIMITS",
    "EXTRA_CIPHER",
    "EXTRA_PEER_CHAIN",
    "EXTRA_SNI",
    "EXTRA_TLS_VERSION",
    "HANDSHAKE_TIMEOUT_SECONDS",
    "LISTEN_BACKLOG",
    "MAX_BUFFERED_PLAINTEXT",
    "MAX_CONNECTIONS",
    "InnerProtocolFactory",
    "TlsLimits",
    "TlsServer",
    "TlsTransport",
    "start_tls_server",
]

logger = logging.getLogger(__name__)

# A device completes a handshake in a few round trips, well under a second even on cellular
# links; 10 s drops silent or slow-drip clients long before they pile up (the standard library's
# 60 s default lets a slowloris hold a connection slot six times longer).
HANDSHAKE_TIMEOUT_SECONDS = 10.0

# Concurrent TCP connections per listener. An idle TLS connection costs a file descriptor and
# roughly 20-40 KiB (OpenSSL state plus asyncio objects), so 10,000 stays within ~400 MiB and
# below common descriptor limits; MQTT/AMQP devices hold connections for hours, so the cap is
# what keeps a reconnect storm from exhausting the process. Excess connections are closed at once.
MAX_CONNECTIONS = 10_000

# Plaintext kept for an inner protocol that paused reading before the socket is paused too: the
# standard library's TLS transport uses the same 256 KiB high-water mark for its read buffer.
MAX_BUFFERED_PLAINTEXT = 256 * 1024

# Listen backlog: devices reconnect in bursts after a network or server outage; asyncio's default
# of 100 would drop SYNs (clients then retry after 1 s). The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 1024

# Refused connections come in floods; one log line per second (with a count) is enough.
REFUSAL_LOG_INTERVAL_SECONDS = 1.0

# `get_extra_info` names the layers above read (aiohttp: `request.transport.get_extra_info`).
EXTRA_PEER_CHAIN = "opendps.peer_chain"
EXTRA_SNI = "opendps.sni"
EXTRA_TLS_VERSION = "opendps.tls_version"
EXTRA_CIPHER = "opendps.cipher"

InnerProtocolFactory = Callable[[], asyncio.Protocol]


@dataclass(frozen=True, slots=True)
class TlsLimits:
    """Per-listener limits; see the module constants for the reason behind each default."""

    handshake_timeout_seconds: float = HANDSHAKE_TIMEOUT_SECONDS
    max_connections: int = MAX_CONNECTIONS
    max_buffered_plaintext: int = MAX_BUFFERED_PLAINTEXT
    backlog: int = LISTEN_BACKLOG

    def __post_init__(self) -> None:
        if self.handshake_timeout_seconds <= 0:
            raise ValueError("handshake_timeout_seconds must be positive")
        if self.max_connections < 1 or self.max_buffered_plaintext < 1 or self.backlog < 1:
            raise ValueError("max_connections, max_buffered_plaintext and backlog must be >= 1")


DEFAULT_TLS_LIMITS = TlsLimits()


async def start_tls_server(
    inner_factory: InnerProtocolFactory,
    *,
    host: str | None,
    port: int,
    context: SSL.Context,
    limits: TlsLimits = DEFAULT_TLS_LIMITS,
    reuse_port: bool = False,
    on_connection_change: Callable[[int], None] | None = None,
) -> TlsServer:
    """Listen for TLS connections and run `inner_factory()`'s protocol on each one.

    `host=None` listens on every interface (one socket per address family, so with `port=0` each
    may get its own port: see `TlsServer.ports`). `context` comes from
    `opendps.tls.contexts.build_server_context`. `on_connection_change(+1 | -1)` is called when a
    connection is admitted and when it ends (for a Prometheus gauge).

    Raises `OSError` unchanged when the port cannot be bound (in use, not permitted), so that the
    caller can fall back to another port.
    """
    loop = asyncio.get_running_loop()
    server = TlsServer(inner_factory, context, limits, on_connection_change, loop)
    listener = await loop.create_server(
        server._new_connection,
        host=host,
        port=port,
        reuse_port=reuse_port or None,
        backlog=limits.backlog,
    )
    server._listener = listener
    return server


class TlsServer:
    """A listening TLS port. Created by `start_tls_server`."""

    def __init__(
        self,
        inner_factory: InnerProtocolFactory,
        context: SSL.Context,
        limits: TlsLimits,
        on_connection_change: Callable[[int], None] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.inner_factory = inner_factory
        self.context = context
        self.limits = limits
        self.loop = loop
        self._on_connection_change = on_connection_change
        self._listener: asyncio.Server | None = None
        self._connections: set[_TlsConnection] = set()
        self._all_ended = loop.create_future()
        self._all_ended.set_result(None)
        self._refused_since_log = 0
        self._last_refusal_log = float("-inf")

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._listener is None else tuple(self._listener.sockets)

    @property
    def ports(self) -> tuple[int, ...]:
        """The bound port of each listening socket, sorted and without repeats."""
        return tuple(sorted({int(sock.getsockname()[1]) for sock in self.sockets}))

    @property
    def open_connections(self) -> int:
        """Connections admitted and not yet ended (handshaking or open)."""
        return len(self._connections)

    def is_serving(self) -> bool:
        return self._listener is not None and self._listener.is_serving()

    def close(self) -> None:
        """Stop accepting connections. Open connections go on until they end or `abort_all()`."""
        if self._listener is not None:
            self._listener.close()

    async def wait_closed(self) -> None:
        """Wait until the listeners are closed (call `close()` first) and every connection ended.

        For a bounded drain: `close()`, then `asyncio.wait_for(wait_closed(), grace)`, then
        `abort_all()` if it timed out.
        """
        if self._listener is not None:
            await self._listener.wait_closed()
        # A loop: a connection accepted just before close() may be admitted after a wake-up.
        while self._connections:
            await asyncio.shield(self._all_ended)

    def abort_all(self) -> None:
        """Abort every open connection at once (no close_notify, buffered data dropped)."""
        for connection in list(self._connections):
            connection.abort()

    def _new_connection(self) -> _TlsConnection:
        return _TlsConnection(self)

    def _admit(self, connection: _TlsConnection) -> bool:
        if len(self._connections) >= self.limits.max_connections:
            self._log_refusal(connection.peer)
            return False
        if not self._connections:
            self._all_ended = self.loop.create_future()
        self._connections.add(connection)
        if self._on_connection_change is not None:
            self._on_connection_change(1)
        return True

    def _release(self, connection: _TlsConnection) -> None:
        self._connections.discard(connection)
        if self._on_connection_change is not None:
            self._on_connection_change(-1)
        if not self._connections and not self._all_ended.done():
            self._all_ended.set_result(None)

    def _log_refusal(self, peer: str) -> None:
        self._refused_since_log += 1
        now = self.loop.time()
        if now - self._last_refusal_log < REFUSAL_LOG_INTERVAL_SECONDS:
            return
        log_event(
            logger,
            logging.WARNING,
            "tls.connection_refused",
            reason="connection limit reached",
            limit=self.limits.max_connections,
            refused=self._refused_since_log,
            peer=peer,
        )
        self._refused_since_log = 0
        self._last_refusal_log = now


class _TlsConnection(asyncio.Protocol):
    """One TCP connection: pumps its `TlsSession` and drives the inner protocol."""

    def __init__(self, server: TlsServer) -> None:
        self._server = server
        self._tcp: asyncio.Transport | None = None
        self._session: TlsSession | None = None
        self._admitted = False
        self.peer = "unknown"
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._received_any = False
        self._failure_logged = False
        self._close_error: Exception | None = None
        self.inner: asyncio.Protocol | None = None
        self._app_transport: TlsTransport | None = None
        self._writing_paused = False
        self.inner_reading_paused = False
        self._tcp_reading_paused = False
        self._pending_plaintext: list[bytes] = []
        self._pending_size = 0
        self._eof_pending = False

    # -- asyncio.Protocol, called by the TCP transport ------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not always an asyncio.Transport subclass (uvloop's is not).
        tcp = cast(asyncio.Transport, transport)
        self._tcp = tcp
        self.peer = _format_peer(tcp.get_extra_info("peername"))
        if not self._server._admit(self):
            tcp.abort()
            return
        self._admitted = True
        self._session = TlsSession(self._server.context)
        self._handshake_timer = self._server.loop.call_later(
            self._server.limits.handshake_timeout_seconds, self._on_handshake_timeout
        )

    def data_received(self, data: bytes) -> None:
        if self._session is None:
            return
        self._received_any = True
        events = self._session.receive_data(data)
        self.flush()
        for event in events:
            if isinstance(event, DataReceived):
                self._deliver(event.data)
            elif isinstance(event, HandshakeCompleted):
                self._on_handshake_completed(event)
            elif isinstance(event, CloseNotifyReceived):
                self._on_eof()
            else:
                self._on_failure(event)

    def eof_received(self) -> bool:
        if self.inner is None:
            self._log_handshake_failure("connection closed during the handshake")
            return False  # asyncio closes the transport
        self._on_eof()
        return True  # we close the transport ourselves, after close_notify

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_handshake_timer()
        if not self._admitted:
            return
        self._admitted = False
        self._server._release(self)
        if self.inner is None:
            self._log_handshake_failure("connection lost during the handshake")
            return
        if self._app_transport is not None:
            self._app_transport.mark_closing()
        self._session = None  # free the OpenSSL connection now, not at the next GC cycle
        self.inner.connection_lost(exc if exc is not None else self._close_error)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.inner is not None:
            self.inner.resume_writing()

    # -- used by TlsTransport -------------------------------------------------------------------

    @property
    def tcp(self) -> asyncio.Transport:
        assert self._tcp is not None
        return self._tcp

    def write_plaintext(self, data: bytes | bytearray | memoryview) -> None:
        if self._session is None or not self._session.can_send or self.tcp.is_closing():
            return  # like asyncio's own transports, writes after close are dropped
        self._session.send(data)
        self.flush()

    def flush(self) -> None:
        assert self._session is not None
        ciphertext = self._session.data_to_send()
        if ciphertext and not self.tcp.is_closing():
            self.tcp.write(ciphertext)

    def close_cleanly(self) -> None:
        """Send close_notify, then close the socket once the write buffer is flushed."""
        if self.tcp.is_closing():
            return
        if self._session is not None:
            self._session.close()
            self.flush()
        self.tcp.close()

    def abort(self) -> None:
        if self._tcp is not None:
            self._tcp.abort()

    def pause_inner_reading(self) -> None:
        self.inner_reading_paused = True

    def resume_inner_reading(self) -> None:
        if not self.inner_reading_paused:
            return
        self.inner_reading_paused = False
        # Deliver on the next loop pass, not inside the inner protocol's own call (sslproto too).
        self._server.loop.call_soon(self._deliver_pending)

    # -- event handling ------------------------------------------------------------------------

    def _on_handshake_completed(self, event: HandshakeCompleted) -> None:
        self._cancel_handshake_timer()
        extra: dict[str, Any] = {
            "sslcontext": self._server.context,
            EXTRA_PEER_CHAIN: event.peer_chain,
            EXTRA_SNI: event.sni,
            EXTRA_TLS_VERSION: event.tls_version,
            EXTRA_CIPHER: event.cipher,
        }
        self._app_transport = TlsTransport(self, extra)
        self.inner = self._server.inner_factory()
        self.inner.connection_made(self._app_transport)
        if self._writing_paused:
            self.inner.pause_writing()

    def _deliver(self, data: bytes) -> None:
        assert self.inner is not None
        if self.tcp.is_closing():
            return  # the inner protocol closed its transport: asyncio delivers nothing more
        if not self.inner_reading_paused and not self._pending_plaintext:
            self.inner.data_received(data)
            return
        self._pending_plaintext.append(data)
        self._pending_size += len(data)
        if self._pending_size > self._server.limits.max_buffered_plaintext:
            self._pause_tcp_reading()

    def _deliver_pending(self) -> None:
        if self.inner_reading_paused or self.inner is None or self._tcp is None:
            return
        if self._pending_plaintext:
            data = b"".join(self._pending_plaintext)
            self._pending_plaintext.clear()
            self._pending_size = 0
            self.inner.data_received(data)
        self._continue_reading()

    def _continue_reading(self) -> None:
        # The inner protocol may have paused again while taking the buffered data.
        if self.inner_reading_paused:
            return
        if self._eof_pending:
            self._finish_eof()
        elif self._tcp_reading_paused and not self.tcp.is_closing():
            self._tcp_reading_paused = False
            self.tcp.resume_reading()

    def _on_eof(self) -> None:
        # TCP EOF or close_notify: the peer sends nothing more. Give the inner protocol what is
        # buffered first; TLS has no half-close for us, so the connection then closes.
        self._eof_pending = True
        if not self.inner_reading_paused and not self._pending_plaintext:
            self._finish_eof()

    def _finish_eof(self) -> None:
        assert self.inner is not None
        if not self._eof_pending or self.tcp.is_closing():
            return
        self._eof_pending = False
        self.inner.eof_received()
        self.close_cleanly()

    def _on_failure(self, event: TlsFailed) -> None:
        if self.inner is None:
            self._log_handshake_failure(event.reason)
        else:
            log_event(
                logger, logging.INFO, "tls.connection_failed", reason=event.reason, peer=self.peer
            )
            self._close_error = ConnectionResetError(f"TLS failure: {event.reason}")
        self.tcp.close()  # after the alert the session queued, if any

    def _on_handshake_timeout(self) -> None:
        self._handshake_timer = None
        self._log_handshake_failure("handshake timeout")
        self.abort()

    def _log_handshake_failure(self, reason: str) -> None:
        if self._failure_logged:
            return
        self._failure_logged = True
        # A connect-and-close without a byte is a port probe or health check, not a TLS problem.
        level = logging.INFO if self._received_any else logging.DEBUG
        log_event(logger, level, "tls.handshake_failed", reason=reason, peer=self.peer)

    def _pause_tcp_reading(self) -> None:
        if not self._tcp_reading_paused and not self.tcp.is_closing():
            self._tcp_reading_paused = True
            self.tcp.pause_reading()

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None


class TlsTransport(asyncio.Transport):
    """The plaintext side of a TLS connection, as the inner protocol sees it.

    `get_extra_info` answers `sslcontext` (the pyOpenSSL context: aiohttp reads it for
    `request.secure`), `opendps.peer_chain` (tuple of `cryptography.x509.Certificate`, leaf
    first, as sent; empty without a client certificate), `opendps.sni`, `opendps.tls_version`,
    `opendps.cipher`, and whatever the TCP transport knows (`peername`, `sockname`, `socket`).
    """

    def __init__(self, connection: _TlsConnection, extra: dict[str, Any]) -> None:
        super().__init__()
        self._connection = connection
        self._extra_info = extra
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._extra_info:
            return self._extra_info[name]
        return self._connection.tcp.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        if not self._closing:
            self._connection.write_plaintext(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview[Any]]) -> None:
        # One join, one encryption pass: fewer, fuller TLS records.
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections do not support half-closes")

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        """Send close_notify, flush, then close the socket; `connection_lost` follows."""
        if self._closing:
            return
        self._closing = True
        self._connection.close_cleanly()

    def abort(self) -> None:
        self._closing = True
        self._connection.abort()

    def is_closing(self) -> bool:
        return self._closing or self._connection.tcp.is_closing()

    def mark_closing(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        self._connection.pause_inner_reading()

    def resume_reading(self) -> None:
        self._connection.resume_inner_reading()

    def is_reading(self) -> bool:
        return not self._connection.inner_reading_paused and not self.is_closing()

    def get_write_buffer_size(self) -> int:
        # Plaintext is encrypted as soon as it is written, so the only buffer is the socket's.
        return self._connection.tcp.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._connection.tcp.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._connection.tcp.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        if not isinstance(protocol, asyncio.Protocol):
            raise TypeError("a TLS transport carries a stream: give an asyncio.Protocol")
        self._connection.inner = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._connection.inner is not None
        return self._connection.inner


def _format_peer(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "unknown"
