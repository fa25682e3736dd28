"""Byte channels and TLS settings shared by the simulator's device clients.

A device dials TLS to the MQTT or AMQP port, or a WebSocket on the HTTPS port, and speaks its
protocol as a byte stream over either; the clients in mqtt.py and amqp.py only see a `Channel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Protocol

import aiohttp

from opendps.simulator.api import DeviceParams, RegistrationOutcome

# The device WebSocket path every SDK dials on the HTTPS port (protocol.md §3, §4.1).
WEBSOCKET_PATH = "/$iothub/websocket"
# Bytes read from a TLS stream at a time: a few protocol frames.
READ_CHUNK_BYTES = 65536


class Channel(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes: ...  # b"" at the end of the stream


def client_ssl_context(params: DeviceParams) -> ssl.SSLContext:
    """TLS 1.2+ trusting `ca_file` (else the system store), presenting the device certificate
    when there is one: the file may hold the whole chain (leaf first), which is sent as is."""
    context = ssl.create_default_context(
        cafile=str(params.ca_file) if params.ca_file is not None else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # as every Azure device SDK
    if params.certificate is not None:
        key = str(params.key) if params.key is not None else None
        context.load_cert_chain(str(params.certificate), key)
    return context


def url_host(host: str) -> str:
    """A host for a URL: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def failure(message: str) -> RegistrationOutcome:
    """An outcome for trouble before any answer: no status code, a `message` (never a secret)."""
    return RegistrationOutcome(None, {"message": message})


class _StreamChannel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self) -> bytes:
        return await self._reader.read(READ_CHUNK_BYTES)


@contextlib.asynccontextmanager
async def open_tls_channel(params: DeviceParams, context: ssl.SSLContext) -> AsyncIterator[Channel]:
    reader, writer = await asyncio.open_connection(
        params.host, params.port, ssl=context, server_hostname=params.host
    )
    try:
        yield _StreamChannel(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


class _WebSocketChannel:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def receive(self) -> bytes:
        message = await self._ws.receive()
        if message.type is aiohttp.WSMsgType.BINARY:
            return bytes(message.data)
        return b""


@contextlib.asynccontextmanager
async def open_websocket_channel(
    params: DeviceParams, context: ssl.SSLContext, subprotocol: str
) -> AsyncIterator[Channel]:
    url = f"wss://{url_host(params.host)}:{params.port}{WEBSOCKET_PATH}"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=(subprotocol,), ssl=context) as ws:
            yield _WebSocketChannel(ws)
