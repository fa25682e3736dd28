"""AMQP over WebSockets: binary frames carry the AMQP byte stream (clients.md §3e).

The `AMQPWSB10` entry of the `/$iothub/websocket` subprotocol table (transports/websocket.py):
the same `AmqpConnection` as the TLS port, over the shared WebSocket stream bridge.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509

from opendps.engine.api import DeviceEngine
from opendps.transports.amqp.adapter import AmqpConnection, Spawn
from opendps.transports.amqp.driver import DEFAULT_AMQP_LIMITS, AmqpLimits
from opendps.transports.websocket import QueueSink, SubprotocolHandler, stream_over_websocket

__all__ = ["AMQP_SUBPROTOCOL", "amqp_websocket_handler"]

# Lower case: the subprotocol table matches case-insensitively and echoes what the client sent.
AMQP_SUBPROTOCOL = "amqpwsb10"


def amqp_websocket_handler(
    engine: DeviceEngine,
    *,
    spawn: Spawn,
    limits: AmqpLimits = DEFAULT_AMQP_LIMITS,
    on_connection_change: Callable[[int], None] | None = None,
) -> SubprotocolHandler:
    """The `AMQPWSB10` entry of the WebSocket subprotocol table."""

    def connect(sink: QueueSink, chain: tuple[x509.Certificate, ...]) -> AmqpConnection:
        return AmqpConnection(
            engine, sink, peer_chain=chain, spawn=spawn, limits=limits, transport_name="amqp-ws"
        )

    return stream_over_websocket("amqp-ws", connect, on_connection_change=on_connection_change)
