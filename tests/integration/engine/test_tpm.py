"""TPM attestation through the engine on both stores (protocol.md §6.2): the challenge, the
token signed with the imported key, replays, expiry, and the hub key the device ends up with.

The device's TPM is tests/unit/attestation/soft_tpm.py: it opens the blobs exactly as a TPM
does (ActivateCredential + Import with every integrity check), so a key that the engine wrapped
for the wrong EK or SRK would not come out.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.integration.engine.world import ID_SCOPE, World, symmetric_spec, tpm_spec
from tests.tpm_keys import EK_B
from tests.unit.attestation.soft_tpm import SoftTpm

from opendps.engine.api import (
    DeviceStatusRequest,
    OperationStatus,
    RegisterRequest,
    SasCredential,
    TpmChallengeRequest,
    TpmTokenCheck,
)
from opendps.model.enrollment import (
    AttestationType,
    ProvisioningStatus,
)
from opendps.model.errors import INVALID_BODY, UNAUTHORIZED, DpsError
from opendps.model.registration import RegistrationStatus

HUB = "hub-1.example.net"
RID = "tpm-device-1"


@pytest.fixture
async def tpm_world(world: World) -> World:
    await world.add_hub(HUB)
    return world


async def challenge(world: World, device: SoftTpm, rid: str = RID) -> bytes:
    return await world.engine.tpm_challenge(
        TpmChallengeRequest(ID_SCOPE, rid, device.endorsement_key, device.storage_root_key)
    )


async def answer(world: World, device: SoftTpm, rid: str = RID) -> SasCredential:
    """The device's whole first step: challenge, import, a token signed with the imported key."""
    return world.credential(rid, device.open(await challenge(world, device, rid)))


async def refused(world: World, credential: SasCredential, rid: str = RID) -> str:
    with pytest.raises(DpsError) as caught:
        await world.engine.register(RegisterRequest(ID_SCOPE, rid, credential))
    assert caught.value.error_code == UNAUTHORIZED
    return caught.value.message


def failures(world: World, reason: str) -> int:
    """The /metrics count of attestation failures for `reason`."""
    label = f'opendps_attestation_failures_total{{reason="{reason}"}} '
    for line in world.metrics.render().decode().splitlines():
        if line.startswith(label):
            return int(float(line.removeprefix(label)))
    return 0


async def test_a_tpm_device_registers_and_receives_its_hub_key(tpm_world: World) -> None:
    device = SoftTpm.make()
    await tpm_world.add_individual(RID, tpm_spec(device.ek_base64))
    status = await tpm_world.register(RID, await answer(tpm_world, device))
    assert status.status is RegistrationStatus.ASSIGNED and status.registration is not None
    assert status.registration.attestation_type is AttestationType.TPM
    # The answer wraps the hub key for the same TPM; the hub identity uses it as its SAS key.
    blob = status.registration.tpm_authentication_key
    assert blob is not None
    hub_key = device.open(blob)
    hub_device = await tpm_world.store.get_hub_device(HUB, RID)
    assert hub_device is not None and hub_device.auth["primaryKey"] == hub_key
    state = await tpm_world.store.get_registration_state(tpm_world.instance.id, RID)
    assert state is not None and state.status is RegistrationStatus.ASSIGNED


async def test_a_replayed_token_cannot_register_again(tpm_world: World) -> None:
    device = SoftTpm.make()
    await tpm_world.add_individual(RID, tpm_spec(device.ek_base64))
    token = await answer(tpm_world, device)
    await tpm_world.register(RID, token)
    before = await tpm_world.store.get_registration_state(tpm_world.instance.id, RID)
    await refused(tpm_world, token)
    assert await tpm_world.store.get_registration_state(tpm_world.instance.id, RID) == before
    assert failures(tpm_world, "TPM challenge already used") == 1


async def test_the_token_still_reads_the_registration_it_made(tpm_world: World) -> None:
    device = SoftTpm.make()
    await tpm_world.add_individual(RID, tpm_spec(device.ek_base64))
    token = await answer(tpm_world, device)
    done = await tpm_world.register(RID, token)
    polled = await tpm_world.poll(RID, done.operation_id, token)
    assert polled.status is RegistrationStatus.ASSIGNED and polled.registration is not None
    assert polled.registration.tpm_authentication_key is not None
    result = await tpm_world.engine.registration_status(DeviceStatusRequest(ID_SCOPE, RID, token))
    assert result.assigned_hub == HUB


async def test_re_registration_gives_a_new_hub_key(tpm_world: World) -> None:
    device = SoftTpm.make()
    await tpm_world.add_individual(RID, tpm_spec(device.ek_base64))
    keys = []
    for _ in range(2):
        status = await tpm_world.register(RID, await answer(tpm_world, device))
        assert status.registration is not None and status.registration.tpm_authentication_key
        keys.append(device.open(status.registration.tpm_authentication_key))
    hub_device = await tpm_world.store.get_hub_device(HUB, RID)
    assert keys[0] != keys[1]
    assert hub_device is not None and hub_device.auth["primaryKey"] == keys[1]


async def test_a_stale_challenge_is_refused(tpm_world: World) -> None:
    device = SoftTpm.make()
    await tpm_world.add_individual(RID, tpm_spec(device.ek_base64))
    token = await answer(tpm_world, device)
    tpm_world.clock.advance(tpm_world.engine._settings.tpm_challenge_ttl_seconds + 1)
    await refused(tpm_world, token)  # the token itself is still valid for an hour
    assert failures(tpm_world, "TPM challenge expired") == 1


async def test_a_new_challenge_replaces_the_previous_one(tpm_world: World) -> None:
    device = SoftTpm.make()
    await tpm_world.add_individual(RID, tpm_spec(device.ek_base64))
    first = await answer(tpm_world, device)
    await challenge(tpm_world, device)
    await refused(tpm_world, first)


async def test_a_token_signed_with_another_key_is_refused(tpm_world: World) -> None:
    device = SoftTpm.make()
    await tpm_world.add_individual(RID, tpm_spec(device.ek_base64))
    await challenge(tpm_world, device)
    await refused(tpm_world, tpm_world.credential(RID))  # the world's symmetric key
    assert await tpm_world.store.get_registration_state(tpm_world.instance.id, RID) is None


async def test_refused_devices_get_a_decoy_challenge_and_then_401(tpm_world: World) -> None:
    """An unknown device, another EK, a symmetric enrollment, an unknown scope: each gets a
    challenge its TPM can open (nothing tells it apart from a real one), but no key is kept, so
    the token it signs is refused."""
    device = SoftTpm.make()
    await tpm_world.add_individual(RID, tpm_spec(EK_B))
    await tpm_world.add_individual("keyed", symmetric_spec())
    for scope, rid, reason in [
        (ID_SCOPE, RID, "endorsement key differs from the enrolled one"),
        (ID_SCOPE, "keyed", "no TPM enrollment"),
        (ID_SCOPE, "nobody", "no TPM enrollment"),
        ("0ne00000FFF", RID, "unknown ID scope"),
    ]:
        blob = await tpm_world.engine.tpm_challenge(
            TpmChallengeRequest(scope, rid, device.endorsement_key, device.storage_root_key)
        )
        token = tpm_world.credential(rid, device.open(blob), scope=scope)
        assert await tpm_world.store.get_tpm_challenge(tpm_world.instance.id, rid) is None
        with pytest.raises(DpsError) as caught:
            await tpm_world.engine.register(RegisterRequest(scope, rid, token))
        assert caught.value.error_code == UNAUTHORIZED
        assert failures(tpm_world, reason) >= 1


async def test_keys_that_are_not_tpm_public_keys_are_a_bad_request(tpm_world: World) -> None:
    device = SoftTpm.make()
    await tpm_world.add_individual(RID, tpm_spec(device.ek_base64))
    for ek, srk in [(b"\x00\x01garbage", device.storage_root_key), (device.endorsement_key, b"")]:
        with pytest.raises(DpsError) as caught:
            await tpm_world.engine.tpm_challenge(TpmChallengeRequest(ID_SCOPE, RID, ek, srk))
        assert caught.value.error_code == INVALID_BODY
    assert await tpm_world.store.get_tpm_challenge(tpm_world.instance.id, RID) is None


async def test_an_ek_changed_after_the_challenge_invalidates_it(tpm_world: World) -> None:
    device = SoftTpm.make()
    enrollment = await tpm_world.add_individual(RID, tpm_spec(device.ek_base64))
    token = await answer(tpm_world, device)
    await tpm_world.store.put_individual_enrollment(
        replace(enrollment, spec=tpm_spec(EK_B), etag='"changed"'), if_match=None
    )
    await refused(tpm_world, token)


async def test_a_disabled_enrollment_is_told_so_after_attestation(tpm_world: World) -> None:
    device = SoftTpm.make()
    spec = tpm_spec(device.ek_base64, provisioning_status=ProvisioningStatus.DISABLED)
    await tpm_world.add_individual(RID, spec)
    status: OperationStatus = await tpm_world.register(RID, await answer(tpm_world, device))
    assert status.status is RegistrationStatus.DISABLED
    assert status.registration is not None and status.registration.tpm_authentication_key is None
    assert await tpm_world.store.get_hub_device(HUB, RID) is None


async def test_the_sasl_check_does_not_use_the_challenge_up(tpm_world: World) -> None:
    device = SoftTpm.make()
    await tpm_world.add_individual(RID, tpm_spec(device.ek_base64))
    token = await answer(tpm_world, device)
    await tpm_world.engine.check_tpm_token(TpmTokenCheck(ID_SCOPE, RID, token.token))
    status = await tpm_world.register(RID, token)
    assert status.status is RegistrationStatus.ASSIGNED
    with pytest.raises(DpsError) as used:  # a second connection cannot reuse it
        await tpm_world.engine.check_tpm_token(TpmTokenCheck(ID_SCOPE, RID, token.token))
    assert used.value.error_code == UNAUTHORIZED
