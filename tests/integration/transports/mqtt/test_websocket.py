"""The `/$iothub/websocket` route over real TLS: subprotocol handshake rules and MQTT frames."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import pytest
from tests import pki as test_pki
from tests.integration.engine.world import ID_SCOPE, World

from opendps.transports.mqtt.packets import (
    Connack,
    ConnackCode,
    Connect,
    decode_packet,
    encode_packet,
)

from .conftest import Servers


def _context(pki: Any) -> ssl.SSLContext:
    return test_pki.client_context(pki)


@pytest.mark.parametrize("offered", ["mqtt", "MQTT"])
async def test_subprotocol_is_matched_in_any_case_and_echoed_exactly(
    servers: Servers, world: World, pki: Any, offered: str
) -> None:
    url = f"wss://localhost:{servers.https_port}/$iothub/websocket"
    connect = Connect(
        "dev-ws", 60, True, f"{ID_SCOPE}/registrations/dev-ws/api-version=2019-03-31", b"x"
    )
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=(offered,), ssl=_context(pki)) as ws:
            assert ws.protocol == offered
            await ws.send_bytes(encode_packet(connect))
            message = await ws.receive(timeout=5)

    assert decode_packet(message.data) == (Connack(ConnackCode.ACCEPTED), 4)


async def test_an_upgrade_without_a_known_subprotocol_gets_400(servers: Servers, pki: Any) -> None:
    url = f"wss://localhost:{servers.https_port}/$iothub/websocket"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(url, protocols=("chat",), ssl=_context(pki))

    assert caught.value.status == 400


async def test_a_text_frame_ends_the_connection(servers: Servers, pki: Any) -> None:
    url = f"wss://localhost:{servers.https_port}/$iothub/websocket"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=("mqtt",), ssl=_context(pki)) as ws:
            await ws.send_str("hello")
            message = await ws.receive(timeout=5)

    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
