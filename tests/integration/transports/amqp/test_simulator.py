"""`opendps.simulator.amqp` against the real server stack (TLS and WebSocket)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.engine.world import ID_SCOPE, World

from opendps.simulator.amqp import register_amqp
from opendps.simulator.api import DeviceParams

from .conftest import Servers


def params(servers: Servers, token: str | None, *, websocket: bool, **changes: Any) -> DeviceParams:
    values: dict[str, Any] = {
        "host": "localhost",
        "port": servers.https_port if websocket else servers.amqp_port,
        "id_scope": ID_SCOPE,
        "registration_id": "dev-1",
        "sas_token": token,
        "certificate": None,
        "key": None,
        "payload": {"model": "m1"},
        "ca_file": servers.pki.server_ca_path,
    }
    values.update(changes)
    return DeviceParams(**values)


@pytest.mark.parametrize("websocket", [False, True])
async def test_simulator_registers_a_symmetric_key_device(
    servers: Servers, world: World, websocket: bool
) -> None:
    await world.add_individual("dev-1")

    outcome = await register_amqp(
        params(servers, world.credential("dev-1").token, websocket=websocket), websocket=websocket
    )

    assert outcome.assigned, outcome
    assert outcome.status_code is None
    assert outcome.body["registrationState"]["assignedHub"] == "hub1.example.net"


@pytest.mark.parametrize("websocket", [False, True])
async def test_simulator_reports_a_rejection_with_the_dps_error(
    servers: Servers, world: World, websocket: bool
) -> None:
    await world.add_individual("dev-1")
    token = world.credential("dev-1", key="AAAA" * 11).token

    outcome = await register_amqp(params(servers, token, websocket=websocket), websocket=websocket)

    assert not outcome.assigned
    assert outcome.status_code == 401
    assert outcome.body["errorCode"] == 401002
    assert outcome.body["condition"] == "amqp:unauthorized-access"


async def test_simulator_reports_an_unreachable_server_without_raising(
    servers: Servers, world: World
) -> None:
    outcome = await register_amqp(
        params(servers, "token", websocket=False, port=1), websocket=False
    )

    assert outcome.status_code is None and "cannot reach" in str(outcome.body["message"])
