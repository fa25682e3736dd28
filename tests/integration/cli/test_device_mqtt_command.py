"""`opendps device register --transport mqtt|mqtt-ws` against a real `opendps serve` (MQTT
on its own TLS port, MQTT over WebSockets on the HTTPS port), defaults from state.json."""

from __future__ import annotations

import base64

import pytest

from .conftest import Cli, ThreadedServer

KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize("transport", ["mqtt", "mqtt-ws"])
def test_device_register_over_mqtt_is_assigned(
    server: ThreadedServer, cli: Cli, transport: str
) -> None:
    rid = f"sim-{transport}"
    cli.json("enrollment", "create", rid, "--primary-key", KEY, "--secondary-key", KEY)

    answer = cli.json(
        "device",
        "register",
        "--registration-id",
        rid,
        "--symmetric-key",
        KEY,
        "--transport",
        transport,
    )

    assert answer["status"] == "assigned"
    assert answer["registrationState"]["registrationId"] == rid


def test_device_register_over_mqtt_with_a_wrong_key_shows_the_401_error(
    server: ThreadedServer, cli: Cli
) -> None:
    cli.json("enrollment", "create", "sim-wrong", "--primary-key", KEY, "--secondary-key", KEY)
    wrong = base64.b64encode(bytes(32)).decode()

    result = cli.run(
        "device",
        "register",
        "--registration-id",
        "sim-wrong",
        "--symmetric-key",
        wrong,
        "--transport",
        "mqtt",
        "--json",
    )

    assert result.exit_code != 0
    assert '"errorCode": 401002' in result.stdout
