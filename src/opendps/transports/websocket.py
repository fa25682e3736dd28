"""`GET /$iothub/websocket`: the WebSocket upgrade every device SDK dials on the HTTPS port.

One route, dispatched on the requested subprotocol through a table (`SubprotocolHandlers`)
that `app.wiring` builds: `mqtt` → MQTT over WebSockets (transports/mqtt/websocket.py), and
`AMQPWSB10` → AMQP over WebSockets when that transport lands. This module imports no
transport, so the transports stay independent of each other.

Protocol rules (protocol.md §3, clients.md §2/§3c/§5.6):
- the subprotocol is matched case-insensitively (paho and mqtt.js send `mqtt`, the C SDK
  `MQTT`) and the exact string the client sent is echoed (Node's `ws` fails otherwise);
- `permessage-deflate` offers are declined (`compress=False`): allowed, and simpler;
- aiohttp's handshake reply lines are plain `Name: value` and only `Connection: Upgrade` names
  the word "connection", which paho's reply parser insists on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from aiohttp import WSMsgType, hdrs, web
from cryptography import x509

from opendps.observability.logging import log_event
from opendps.tls.server import EXTRA_PEER_CHAIN

__all__ = [
    "WEBSOCKET_PATH",
    "StreamConnection",
    "SubprotocolHandler",
    "add_websocket_route",
    "choose_subprotocol",
    "stream_over_websocket",
]

logger = logging.getLogger(__name__)

WEBSOCKET_PATH = "/$iothub/websocket"

# Runs one protocol over an open WebSocket until it ends; the route closes it afterwards.
SubprotocolHandler = Callable[[web.Request, web.WebSocketResponse], Awaitable[None]]


def choose_subprotocol(offered: str, known: Mapping[str, object]) -> str | None:
    """The first offered subprotocol (exactly as sent) whose lower-cased name is in `known`."""
    for candidate in offered.split(","):
        name = candidate.strip()
        if name and name.lower() in known:
            return name
    return None


def add_websocket_route(
    app: web.Application,
    handlers: Mapping[str, SubprotocolHandler],
    *,
    max_message_bytes: int = 4 * 1024 * 1024,
) -> None:
    """Serve `WEBSOCKET_PATH`; `handlers` maps lower-case subprotocol names to their handler.

    An upgrade offering none of them gets 400 without switching protocols.
    """
    table = {name.lower(): handler for name, handler in handlers.items()}

    async def upgrade(request: web.Request) -> web.StreamResponse:
        protocol = choose_subprotocol(request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, ""), table)
        if protocol is None:
            raise web.HTTPBadRequest(
                text=f"Sec-WebSocket-Protocol must offer one of: {', '.join(sorted(table))}"
            )
        ws = web.WebSocketResponse(
            protocols=(protocol,), compress=False, max_msg_size=max_message_bytes
        )
        await ws.prepare(request)
        try:
            await table[protocol.lower()](request, ws)
        finally:
            await ws.close()
        return ws

    app.router.add_get(WEBSOCKET_PATH, upgrade, name="device.websocket", allow_head=False)


class QueueSink:
    """The byte sink a stream connection writes to over a WebSocket: writes are queued for the
    sender loop (frames must be sent from a coroutine); None in the queue means close."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def write(self, data: bytes) -> None:
        self.queue.put_nowait(data)

    def close(self) -> None:
        self.queue.put_nowait(None)


class StreamConnection(Protocol):
    """A transport's per-connection object (MQTT, AMQP), fed the byte stream it speaks."""

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...


# Builds a transport's connection over the WebSocket's sink, given the TLS client chain.
ConnectionFactory = Callable[[QueueSink, tuple[x509.Certificate, ...]], StreamConnection]


def stream_over_websocket(
    name: str,
    make_connection: ConnectionFactory,
    *,
    on_connection_change: Callable[[int], None] | None = None,
) -> SubprotocolHandler:
    """A subprotocol handler that runs a byte-stream protocol over binary frames.

    Frames in → `data_received`; the connection's writes → binary frames. A text frame is not
    part of the stream and ends the connection, as does the connection closing its sink.
    """

    async def serve(request: web.Request, ws: web.WebSocketResponse) -> None:
        transport = request.transport
        chain = tuple(transport.get_extra_info(EXTRA_PEER_CHAIN) or ()) if transport else ()
        sink = QueueSink()
        connection = make_connection(sink, chain)
        if on_connection_change is not None:
            on_connection_change(1)
        try:
            async with asyncio.TaskGroup() as group:
                sender = group.create_task(_send(ws, sink.queue))
                await _receive(name, ws, connection, sender)
                connection.connection_lost()
                sink.close()
        finally:
            if on_connection_change is not None:
                on_connection_change(-1)

    return serve


async def _receive(
    name: str, ws: web.WebSocketResponse, connection: StreamConnection, sender: asyncio.Task[None]
) -> None:
    async for message in ws:
        if message.type is WSMsgType.BINARY:
            connection.data_received(message.data)
        elif message.type is WSMsgType.TEXT:
            log_event(logger, logging.INFO, "device.websocket.closed", transport=name,
                      reason="text frame in a binary stream")  # fmt: skip
            return
        if sender.done():
            return  # the connection ended (closed by the protocol, or a protocol error)


async def _send(ws: web.WebSocketResponse, queue: asyncio.Queue[bytes | None]) -> None:
    while (data := await queue.get()) is not None:
        if ws.closed:
            return
        await ws.send_bytes(data)
    await ws.close()
