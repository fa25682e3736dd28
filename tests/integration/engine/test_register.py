"""The registration pipeline end to end on a real SQLite store, without sockets."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from tests.integration.engine.world import ID_SCOPE, PRIMARY, SECONDARY, World, symmetric_spec

from opendps.attestation.symmetric import derive_device_key
from opendps.engine.api import (
    DeviceStatusRequest,
    EngineSettings,
    OperationStatusRequest,
    RegisterRequest,
    SasCredential,
)
from opendps.model.audit import MeterKind
from opendps.model.device import DeviceAuthKind
from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    EnrollmentSpec,
    ProvisioningStatus,
)
from opendps.model.errors import (
    HUB_OPERATION_FAILED,
    INVALID_BODY,
    INVALID_REGISTRATION_ID,
    NO_HUB,
    OPERATION_NOT_FOUND,
    REGISTRATION_NOT_FOUND,
    THROTTLED,
    UNAUTHORIZED,
    DpsError,
)
from opendps.model.hub import AllocationPolicy, HubKind, LinkedHub
from opendps.model.registration import RegistrationStatus, Substatus
from opendps.store.interface import Store

OTHER_KEY = "ERERERERERERERERERERERERERERERERERERERERERE="
HUB = "hub-1.example.net"


async def refused(
    world: World, registration_id: str, credential: SasCredential | None, scope: str = ID_SCOPE
) -> DpsError:
    with pytest.raises(DpsError) as caught:
        await world.engine.register(RegisterRequest(scope, registration_id, credential))
    return caught.value


async def registrations_counted(world: World) -> int:
    meters = await world.store.list_meters(world.instance.id)
    return sum(m.count for m in meters if m.kind is MeterKind.REGISTRATION)


@pytest.mark.parametrize("key", [PRIMARY, SECONDARY])
async def test_individual_enrollment_with_either_key_is_assigned_at_once(
    world: World, key: str
) -> None:
    await world.add_hub(HUB)
    twin = {"tags": {"site": "berlin"}, "properties": {"desired": {"interval": 5, "$metadata": {}}}}
    await world.add_individual("sensor-001", symmetric_spec(initial_twin=twin, iot_edge=True))
    result = await world.register("sensor-001", world.credential("sensor-001", key))
    assert result.status is RegistrationStatus.ASSIGNED and result.is_terminal
    state = result.registration
    assert state is not None
    assert (state.assigned_hub, state.device_id, state.substatus) == (
        HUB,
        "sensor-001",
        Substatus.INITIAL_ASSIGNMENT,
    )
    assert (
        state.attestation_type is AttestationType.SYMMETRIC_KEY
        and state.enrollment_group_id is None
    )
    device = await world.store.get_hub_device(HUB, "sensor-001")
    assert device is not None
    assert device.auth_kind is DeviceAuthKind.SAS and device.auth == {
        "primaryKey": PRIMARY,
        "secondaryKey": SECONDARY,
    }
    assert (device.tags, device.desired, device.iot_edge) == (
        {"site": "berlin"},
        {"interval": 5},
        True,
    )


@pytest.mark.parametrize("encode", [True, False], ids=["python-encoded-sr", "node-raw-sr"])
async def test_group_device_with_derived_key_is_assigned(world: World, encode: bool) -> None:
    await world.add_hub(HUB)
    await world.add_group("other-group", symmetric_spec(OTHER_KEY, OTHER_KEY))
    await world.add_group("grp-1")
    result = await world.register("Sensor-7", world.group_credential("Sensor-7", encode=encode))
    assert result.status is RegistrationStatus.ASSIGNED
    assert result.registration is not None
    assert (result.registration.enrollment_group_id, result.registration.device_id) == (
        "grp-1",
        "Sensor-7",
    )
    device = await world.store.get_hub_device(HUB, "Sensor-7")
    assert device is not None
    assert device.auth["primaryKey"] == derive_device_key(PRIMARY, "Sensor-7")
    assert device.auth["secondaryKey"] == derive_device_key(SECONDARY, "Sensor-7")


async def test_group_device_may_sign_with_the_secondary_derived_key(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_group("grp-1")
    result = await world.register("dev-2", world.group_credential("dev-2", SECONDARY))
    assert result.status is RegistrationStatus.ASSIGNED


async def test_a_group_created_after_the_group_cache_filled_is_found_at_once(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_group("grp-1")
    assert (
        await world.register("dev-a", world.group_credential("dev-a"))
    ).status is RegistrationStatus.ASSIGNED
    await world.add_group("grp-2", symmetric_spec(OTHER_KEY, OTHER_KEY))  # no cache invalidation
    result = await world.register("dev-b", world.group_credential("dev-b", OTHER_KEY))
    assert result.registration is not None and result.registration.enrollment_group_id == "grp-2"


async def test_a_rotated_group_key_stops_working_at_once(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_group("grp-1")
    assert (
        await world.register("dev-a", world.group_credential("dev-a"))
    ).status is RegistrationStatus.ASSIGNED
    await world.add_group("grp-1", symmetric_spec(OTHER_KEY, OTHER_KEY))
    assert (
        await refused(world, "dev-a", world.group_credential("dev-a"))
    ).error_code == UNAUTHORIZED
    assert (
        await world.register("dev-a", world.group_credential("dev-a", OTHER_KEY))
    ).status is RegistrationStatus.ASSIGNED


async def test_a_new_device_of_a_group_rotated_after_the_cache_filled_needs_the_new_key(
    world: World,
) -> None:
    await world.add_hub(HUB)
    await world.add_group("grp-1")
    await world.register("dev-a", world.group_credential("dev-a"))  # the group list is cached
    await world.add_group("grp-1", symmetric_spec(OTHER_KEY, OTHER_KEY))  # no cache invalidation
    # The cached keys still verify the old token: only the stored ones may decide.
    assert (
        await refused(world, "dev-b", world.group_credential("dev-b"))
    ).error_code == UNAUTHORIZED
    result = await world.register("dev-b", world.group_credential("dev-b", OTHER_KEY))
    assert result.registration is not None and result.registration.enrollment_group_id == "grp-1"


async def test_a_group_deleted_after_the_cache_filled_admits_no_new_device(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_group("grp-1")
    await world.register("dev-a", world.group_credential("dev-a"))
    await world.store.delete_enrollment_group(world.instance.id, "grp-1", if_match=None)
    for device in ("dev-a", "dev-b"):
        assert (
            await refused(world, device, world.group_credential(device))
        ).error_code == UNAUTHORIZED


async def test_a_device_keeps_the_group_of_its_state_when_an_earlier_group_also_matches(
    world: World,
) -> None:
    await world.add_hub(HUB)
    await world.add_group("grp-2")
    await world.register("dev-1", world.group_credential("dev-1"))
    await world.add_group("grp-1")  # same keys, listed first
    world.use()  # another node: nothing remembered, nothing cached
    first_in_list = await world.register("dev-9", world.group_credential("dev-9"))
    assert first_in_list.registration is not None
    assert first_in_list.registration.enrollment_group_id == "grp-1"
    # The warm cache now points dev-1 at grp-1, but its registration state names grp-2.
    result = await world.register("dev-1", world.group_credential("dev-1"))
    assert result.registration is not None and result.registration.enrollment_group_id == "grp-2"


class _CountingStore:
    """The world's store, recording the name of every read."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.reads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if not name.startswith(("get_", "list_")):
            return method

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.reads.append(name)
            return await method(*args, **kwargs)

        return counted


async def test_a_group_devices_first_registration_reads_the_store_once(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_group("grp-1")
    counting = _CountingStore(world.store)
    counted = World(cast(Store, counting), world.clock, world.instance)
    await counted.register("dev-a", counted.group_credential("dev-a"))  # fills the caches
    counting.reads.clear()
    result = await counted.register("dev-b", counted.group_credential("dev-b"))
    assert result.status is RegistrationStatus.ASSIGNED
    # State, individual enrollment and the (re-read) group in one transaction; the hub device
    # is created without a read.
    assert counting.reads == ["get_device_records"]


async def test_individual_enrollment_takes_precedence_over_a_matching_group(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_group("grp-1")
    await world.add_individual("dev-1", symmetric_spec(OTHER_KEY, OTHER_KEY))
    # The group-derived key would match the group, but the individual enrollment decides alone.
    assert (
        await refused(world, "dev-1", world.group_credential("dev-1"))
    ).error_code == UNAUTHORIZED
    result = await world.register("dev-1", world.credential("dev-1", OTHER_KEY))
    assert result.registration is not None and result.registration.enrollment_group_id is None


async def test_unknown_scope_unknown_device_and_wrong_key_are_the_same_401_and_store_nothing(
    world: World,
) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    errors = [
        await refused(world, "dev-1", world.credential("dev-1", OTHER_KEY)),
        await refused(world, "nobody", world.credential("nobody")),
        await refused(
            world, "dev-1", world.credential("dev-1", scope="0ne99999999"), scope="0ne99999999"
        ),
        await refused(world, "dev-1", None),
    ]
    assert {(e.error_code, e.http_status, e.message) for e in errors} == {
        (UNAUTHORIZED, 401, "Unauthorized")
    }
    assert await world.store.get_registration_state(world.instance.id, "dev-1") is None
    assert await registrations_counted(world) == 0


async def test_expired_token_is_refused_with_401(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    expired = world.credential("dev-1", expiry=int(world.clock.now().timestamp()) - 600)
    assert (await refused(world, "dev-1", expired)).error_code == UNAUTHORIZED


async def test_token_for_another_registration_id_is_refused(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    assert (await refused(world, "dev-1", world.credential("dev-2"))).error_code == UNAUTHORIZED


async def test_x509_individual_enrollment_refuses_a_sas_token(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1", EnrollmentSpec(Attestation(AttestationType.X509)))
    assert (await refused(world, "dev-1", world.credential("dev-1"))).error_code == UNAUTHORIZED


async def test_disabled_individual_enrollment_reports_disabled(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual(
        "dev-1", symmetric_spec(provisioning_status=ProvisioningStatus.DISABLED)
    )
    result = await world.register("dev-1")
    assert result.status is RegistrationStatus.DISABLED and result.is_terminal
    assert await world.store.get_hub_device(HUB, "dev-1") is None
    state = await world.store.get_registration_state(world.instance.id, "dev-1")
    assert state is not None and state.status is RegistrationStatus.DISABLED
    assert await registrations_counted(world) == 1


async def test_disabled_group_reports_disabled_but_a_wrong_key_is_still_401(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_group("grp-1", symmetric_spec(provisioning_status=ProvisioningStatus.DISABLED))
    assert (
        await world.register("dev-1", world.group_credential("dev-1"))
    ).status is RegistrationStatus.DISABLED
    assert (
        await refused(world, "dev-1", world.group_credential("dev-1", OTHER_KEY))
    ).error_code == UNAUTHORIZED


async def test_no_linked_hub_fails_the_registration_with_400208(world: World) -> None:
    await world.add_individual("dev-1")
    result = await world.register("dev-1")
    assert result.status is RegistrationStatus.FAILED and result.registration is not None
    assert result.registration.error_code == NO_HUB
    state = await world.store.get_registration_state(world.instance.id, "dev-1")
    assert state is not None and state.error_code == NO_HUB


async def test_every_registration_that_passes_attestation_is_metered(world: World) -> None:
    await world.add_individual("dev-1")
    await world.register("dev-1")  # failed: no hub
    await world.add_hub(HUB)
    await world.register("dev-1")
    await world.register("dev-1")
    await refused(world, "dev-1", world.credential("dev-1", OTHER_KEY))
    assert await registrations_counted(world) == 3


async def test_enrollment_device_id_names_the_hub_device(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1", device_id="Pump-17")
    result = await world.register("dev-1")
    assert result.registration is not None and result.registration.device_id == "Pump-17"
    assert await world.store.get_hub_device(HUB, "Pump-17") is not None


async def test_registering_twice_is_idempotent_on_the_hub(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1", symmetric_spec(initial_twin={"tags": {"a": 1}}))
    first = await world.register("dev-1")
    device = await world.store.get_hub_device(HUB, "dev-1")
    second = await world.register("dev-1")
    assert second.registration is not None and first.registration is not None
    assert second.registration.substatus is Substatus.INITIAL_ASSIGNMENT
    assert second.operation_id != first.operation_id
    assert await world.store.get_hub_device(HUB, "dev-1") == device


async def test_concurrent_registrations_of_one_device_are_serialised(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    results = await asyncio.gather(*(world.register("dev-1") for _ in range(5)))
    assert {r.status for r in results} == {RegistrationStatus.ASSIGNED}
    assert (await world.store.list_hub_devices(HUB, after=None, limit=10)).items[
        0
    ].device_id == "dev-1"


async def test_invalid_registration_id_and_mismatched_body_are_400(world: World) -> None:
    with pytest.raises(DpsError) as caught:
        await world.engine.register(RegisterRequest(ID_SCOPE, "-bad-", world.credential("-bad-")))
    assert caught.value.error_code == INVALID_REGISTRATION_ID
    with pytest.raises(DpsError) as caught:
        await world.engine.register(
            RegisterRequest(
                ID_SCOPE, "dev-1", world.credential("dev-1"), body_registration_id="dev-2"
            )
        )
    assert caught.value.error_code == INVALID_BODY


async def test_body_registration_id_may_differ_in_case(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    request = RegisterRequest(
        ID_SCOPE, "dev-1", world.credential("dev-1"), body_registration_id="DEV-1"
    )
    assert (await world.engine.register(request)).status is RegistrationStatus.ASSIGNED


async def test_the_operation_of_a_fast_registration_can_be_polled(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    result = await world.register("dev-1")
    polled = await world.poll("dev-1", result.operation_id)
    assert (
        polled.status is RegistrationStatus.ASSIGNED and polled.registration == result.registration
    )


async def test_polling_another_devices_operation_is_404(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    await world.add_individual("dev-2")
    result = await world.register("dev-1")
    with pytest.raises(DpsError) as caught:
        await world.poll("dev-2", result.operation_id)
    assert caught.value.error_code == OPERATION_NOT_FOUND
    with pytest.raises(DpsError) as caught:
        await world.poll("dev-1", "4.0000.nope")
    assert caught.value.error_code == OPERATION_NOT_FOUND


async def test_polls_need_the_devices_credential(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    result = await world.register("dev-1")
    with pytest.raises(DpsError) as caught:
        await world.poll("dev-1", result.operation_id, world.credential("dev-1", OTHER_KEY))
    assert caught.value.error_code == UNAUTHORIZED


async def test_the_sixth_poll_within_ten_seconds_is_throttled(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    result = await world.register("dev-1")
    request = OperationStatusRequest(
        ID_SCOPE, "dev-1", result.operation_id, world.credential("dev-1")
    )
    for _ in range(5):
        await world.engine.operation_status(request)
    with pytest.raises(DpsError) as caught:
        await world.engine.operation_status(request)
    assert caught.value.error_code == THROTTLED and caught.value.retry_after == 10


async def test_instance_registration_rate_answers_429_and_stores_nothing(world: World) -> None:
    world.use(EngineSettings(instance_registrations_per_second=1, instance_registration_burst=2))
    await world.add_hub(HUB)
    for name in ("dev-1", "dev-2", "dev-3"):
        await world.add_individual(name)
    await world.register("dev-1")
    await world.register("dev-2")
    with pytest.raises(DpsError) as caught:
        await world.register("dev-3")
    assert (caught.value.error_code, caught.value.retry_after) == (THROTTLED, 1)
    assert await world.store.get_registration_state(world.instance.id, "dev-3") is None
    assert await registrations_counted(world) == 2
    world.clock.advance(1)
    assert (await world.register("dev-3")).status is RegistrationStatus.ASSIGNED


async def test_device_reads_its_registration_state(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    request = DeviceStatusRequest(ID_SCOPE, "dev-1", world.credential("dev-1"))
    with pytest.raises(DpsError) as caught:
        await world.engine.registration_status(request)
    assert caught.value.error_code == REGISTRATION_NOT_FOUND
    registered = await world.register("dev-1")
    assert await world.engine.registration_status(request) == registered.registration


async def test_id_scope_is_matched_whatever_its_case(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    scope = ID_SCOPE.upper()
    result = await world.register("dev-1", world.credential("dev-1", scope=scope), scope=scope)
    assert result.status is RegistrationStatus.ASSIGNED


async def test_hub_of_an_unconfigured_kind_fails_the_registration(world: World) -> None:
    await world.add_hub("azure-hub.example.net", kind=HubKind.AZURE)
    await world.add_individual("dev-1")
    result = await world.register("dev-1")
    assert result.status is RegistrationStatus.FAILED and result.registration is not None
    assert result.registration.error_code == HUB_OPERATION_FAILED


async def test_registration_id_case_is_preserved_but_matched_insensitively(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_group("grp-1")
    first = await world.register("Dev-X", world.group_credential("Dev-X"))
    state = await world.store.get_registration_state(world.instance.id, "dev-x")
    assert state is not None and state.registration_id == "Dev-X"
    assert first.registration is not None and first.registration.device_id == "Dev-X"


async def test_a_hub_linked_after_the_hub_cache_filled_is_used_at_once(world: World) -> None:
    await world.add_hub(HUB)
    spec = symmetric_spec(allocation_policy=AllocationPolicy.STATIC, iot_hubs=("late.example.net",))
    await world.add_individual("dev-1", spec)
    assert (await world.register("dev-1")).status is RegistrationStatus.FAILED
    # Linked behind the engine's back (another node, or the service API): no cache invalidation.
    await world.store.put_linked_hub(
        LinkedHub(world.instance.id, "late.example.net", HubKind.BUILTIN)
    )
    result = await world.register("dev-1")
    assert (
        result.registration is not None and result.registration.assigned_hub == "late.example.net"
    )


async def test_outcomes_and_refusal_reasons_are_counted_in_the_metrics(world: World) -> None:
    await world.add_hub(HUB)
    await world.add_individual("dev-1")
    await world.register("dev-1")
    await refused(world, "dev-1", world.credential("dev-1", OTHER_KEY))
    expired = world.credential("dev-1", expiry=int(world.clock.now().timestamp()) - 600)
    await refused(world, "dev-1", expired)

    text = world.metrics.render().decode()
    assert 'opendps_registrations_total{outcome="assigned"} 1.0' in text
    assert 'opendps_attestation_failures_total{reason="SAS token expired"} 1.0' in text
    assert (
        'opendps_attestation_failures_total{reason="individual enrollment does not verify"} 1.0'
        in text
    )
