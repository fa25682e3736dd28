"""1,000 concurrent MQTT devices over TLS register and disconnect: all assigned, none lost."""

from __future__ import annotations

import asyncio
import resource

import pytest
from tests.integration.engine.world import World

from opendps.simulator.mqtt import register_mqtt

from .conftest import Servers

DEVICES = 1000
# Bounded and self-stopping: generous for a loaded CI machine, far below "hung".
DEADLINE_SECONDS = 240


async def test_a_thousand_concurrent_devices_all_register(servers: Servers, world: World) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * DEVICES + 100:
        pytest.skip(f"needs {2 * DEVICES + 100} file descriptors (ulimit -n is {soft})")
    await world.add_group("fleet")
    params = [
        servers.params(f"fleet-{n:04d}", world.group_credential(f"fleet-{n:04d}").token)
        for n in range(DEVICES)
    ]

    async with asyncio.timeout(DEADLINE_SECONDS):
        outcomes = await asyncio.gather(*(register_mqtt(p, websocket=False) for p in params))

    failures = [o.body for o in outcomes if not o.assigned]
    assert not failures, failures[:5]
    states = [
        await world.store.get_registration_state(world.instance.id, p.registration_id)
        for p in params
    ]
    assert sum(1 for s in states if s is not None and str(s.status) == "assigned") == DEVICES
    # Every device disconnected: the listener drains without aborting anyone.
    servers.mqtt.close()
    await asyncio.wait_for(servers.mqtt.wait_closed(), 10)
    assert servers.mqtt.open_connections == 0
