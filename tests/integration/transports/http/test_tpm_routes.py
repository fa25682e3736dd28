"""TPM devices over the device REST API (protocol.md §1.5, §6.2): the first PUT without a
credential is answered 401 with the key blob, the second with a SAS signed by it registers."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from tests.integration.engine.world import ID_SCOPE, World, tpm_spec
from tests.unit.attestation.soft_tpm import SoftTpm

from opendps.model.errors import INVALID_BODY, UNAUTHORIZED

Client = TestClient[web.Request, web.Application]
HUB = "hub-1.example.net"
RID = "tpm-device-1"
PATH = f"/{ID_SCOPE}/registrations/{RID}/register?api-version=2019-03-31"
NODE_HEADERS = {"Accept": "application/json", "Content-Type": "application/json; charset=utf-8"}


def tpm_body(device: SoftTpm) -> dict[str, Any]:
    """What the Node and C SDKs send on both requests."""
    return {
        "registrationId": RID,
        "tpm": {
            "endorsementKey": device.ek_base64,
            "storageRootKey": base64.b64encode(device.storage_root_key).decode(),
        },
    }


async def put(client: Client, body: Any, headers: dict[str, str]) -> aiohttp.ClientResponse:
    return await client.put(PATH, data=json.dumps(body), headers={**NODE_HEADERS, **headers})


async def test_challenge_then_register_with_the_imported_key(client: Client, world: World) -> None:
    device = SoftTpm.make()
    await world.add_hub(HUB)
    await world.add_individual(RID, tpm_spec(device.ek_base64))
    first = await put(client, tpm_body(device), {})
    assert first.status == 401
    challenge = await first.json()
    assert set(challenge) == {"authenticationKey", "keyName"}  # C needs keyName (§6.2)
    assert challenge["keyName"] == "registration"
    key = device.open(base64.b64decode(challenge["authenticationKey"]))
    token = world.credential(RID, key).token
    second = await put(client, tpm_body(device), {"Authorization": token})
    assert second.status == 200
    state = (await second.json())["registrationState"]
    assert state["status"] == "assigned" and state["assignedHub"] == HUB
    assert list(state)[0] == "tpm" and set(state["tpm"]) == {"authenticationKey"}
    hub_key = device.open(base64.b64decode(state["tpm"]["authenticationKey"]))
    assert hub_key != key


async def test_an_unknown_device_is_challenged_then_refused(client: Client, world: World) -> None:
    """A decoy challenge first (engine/tpm.py: nothing tells which devices are enrolled), then
    the usual 401 for the token signed with its key."""
    device = SoftTpm.make()
    first = await put(client, tpm_body(device), {})
    assert first.status == 401
    key = device.open(base64.b64decode((await first.json())["authenticationKey"]))
    second = await put(
        client, tpm_body(device), {"Authorization": world.credential(RID, key).token}
    )
    assert second.status == 401
    assert (await second.json())["errorCode"] == UNAUTHORIZED


async def test_malformed_tpm_keys_are_400_and_store_nothing(client: Client, world: World) -> None:
    device = SoftTpm.make()
    await world.add_individual(RID, tpm_spec(device.ek_base64))
    broken_srk = tpm_body(device)
    broken_srk["tpm"]["storageRootKey"] = base64.b64encode(b"\x00\x04abcd").decode()
    for body in (
        {"registrationId": RID, "tpm": "EK"},
        {"registrationId": RID, "tpm": {"endorsementKey": "not base64!"}},
        {"registrationId": RID, "tpm": {"endorsementKey": device.ek_base64}},
        broken_srk,
    ):
        response = await put(client, body, {})
        assert response.status == 400, body
        assert (await response.json())["errorCode"] == INVALID_BODY
    assert await world.store.get_tpm_challenge(world.instance.id, RID) is None
