"""Subprotocol choice of `/$iothub/websocket` (protocol.md §3: case-insensitive, echoed)."""

from __future__ import annotations

import pytest

from opendps.transports.websocket import choose_subprotocol

TABLE = {"mqtt": object(), "amqpwsb10": object()}


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ("mqtt", "mqtt"),
        ("MQTT", "MQTT"),  # the C SDK's spelling, echoed as sent
        ("AMQPWSB10", "AMQPWSB10"),
        ("chat, Mqtt", "Mqtt"),
        ("chat", None),
        ("", None),
    ],
)
def test_the_first_known_subprotocol_is_chosen_as_sent(offered: str, chosen: str | None) -> None:
    assert choose_subprotocol(offered, TABLE) == chosen
