"""MQTT over WebSockets: binary frames carry the MQTT byte stream (protocol.md §3).

The `mqtt` entry of the `/$iothub/websocket` subprotocol table (transports/websocket.py): the
same `MqttConnection` as the TLS port, over the shared WebSocket stream bridge.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509

from opendps.engine.api import DeviceEngine
from opendps.transports.mqtt.adapter import MqttConnection, MqttSettings, Spawn
from opendps.transports.websocket import QueueSink, SubprotocolHandler, stream_over_websocket

__all__ = ["MQTT_SUBPROTOCOL", "mqtt_websocket_handler"]

MQTT_SUBPROTOCOL = "mqtt"


def mqtt_websocket_handler(
    engine: DeviceEngine,
    *,
    spawn: Spawn,
    settings: MqttSettings | None = None,
    on_connection_change: Callable[[int], None] | None = None,
) -> SubprotocolHandler:
    """The `mqtt` entry of the WebSocket subprotocol table."""
    chosen = settings or MqttSettings()

    def connect(sink: QueueSink, chain: tuple[x509.Certificate, ...]) -> MqttConnection:
        return MqttConnection(
            engine, sink, peer_chain=chain, spawn=spawn, settings=chosen, transport_name="mqtt-ws"
        )

    return stream_over_websocket("mqtt-ws", connect, on_connection_change=on_connection_change)
