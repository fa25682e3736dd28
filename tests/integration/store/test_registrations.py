"""Registration states, operations, CA certificates and built-in hub devices."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from tests.storefixtures import T0, sample_enrollment, sample_group, sample_registration

from opendps.model.certificate import CaCertificate
from opendps.model.device import DeviceAuthKind, HubDevice
from opendps.model.enrollment import AttestationType
from opendps.model.errors import ALREADY_EXISTS, ETAG_MISMATCH, INSTANCE_NOT_FOUND, DpsError
from opendps.model.instance import Instance
from opendps.model.registration import Operation, RegistrationStatus, Substatus
from opendps.store.sql import SqlStore

LATER = T0 + timedelta(seconds=30)


async def test_registration_state_round_trips_and_keeps_created_at(
    store: SqlStore, instance: Instance
) -> None:
    state = dataclasses.replace(
        sample_registration(instance.id, "Sensor-7", group_id="Floor-3"),
        substatus=Substatus.DEVICE_DATA_MIGRATED,
        payload={"model": "t1000", "nested": [1, 2, {"x": None}]},
        previous_hubs=("hub-0.example.net", "hub-1.example.net"),
    )
    assert await store.put_registration_state(state) == state
    assert await store.get_registration_state(instance.id, "sensor-7") == state
    failed = dataclasses.replace(
        state,
        registration_id="SENSOR-7",
        status=RegistrationStatus.FAILED,
        error_code=400208,
        error_message="No hub.",
        payload=None,
        previous_hubs=(),
        etag='"r-2"',
        created_at=LATER,
        updated_at=LATER,
    )
    assert await store.put_registration_state(failed) == dataclasses.replace(failed, created_at=T0)
    assert await store.get_registration_state(instance.id, "Sensor-7") == dataclasses.replace(
        failed, created_at=T0
    )


@pytest.mark.parametrize("payload", ["text", 42, [1, "two"], {"a": {"b": []}}, True])
async def test_any_json_payload_comes_back_as_sent(
    store: SqlStore, instance: Instance, payload: object
) -> None:
    state = dataclasses.replace(sample_registration(instance.id, "dev-1"), payload=payload)
    await store.put_registration_state(state)
    stored = await store.get_registration_state(instance.id, "dev-1")
    assert stored is not None and stored.payload == payload


async def test_device_records_are_read_together_and_matched_case_insensitively(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    state = sample_registration(instance.id, "Sensor-7", group_id="Floor-3")
    enrollment = sample_enrollment(instance.id, "Sensor-7")
    group = sample_group(instance.id, "Floor-3")
    await store.put_registration_state(state)
    await store.put_individual_enrollment(enrollment, if_match=None)
    await store.put_enrollment_group(group, if_match=None)
    await store.put_enrollment_group(sample_group(other_instance.id, "Floor-4"), if_match=None)

    records = await store.get_device_records(instance.id, "SENSOR-7", group_id="floor-3")
    assert (records.state, records.individual, records.group) == (state, enrollment, group)
    unasked = await store.get_device_records(instance.id, "sensor-7", group_id=None)
    assert (unasked.state, unasked.individual, unasked.group) == (state, enrollment, None)
    # Another instance's group is not this instance's, and a new device has no records yet.
    stranger = await store.get_device_records(instance.id, "dev-new", group_id="Floor-4")
    assert (stranger.state, stranger.individual, stranger.group) == (None, None, None)


async def test_registration_delete_follows_the_etag_rules(
    store: SqlStore, instance: Instance
) -> None:
    await store.put_registration_state(sample_registration(instance.id, "dev-1", etag='"r-1"'))
    with pytest.raises(DpsError) as stale:
        await store.delete_registration_state(instance.id, "dev-1", if_match='"r-0"')
    assert stale.value.error_code == ETAG_MISMATCH
    assert await store.delete_registration_state(instance.id, "DEV-1", if_match='"r-1"') is True
    assert await store.delete_registration_state(instance.id, "dev-1", if_match=None) is False
    with pytest.raises(DpsError):
        await store.delete_registration_state(instance.id, "dev-1", if_match="*")


async def test_registration_states_are_listed_by_group_in_pages(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    in_group = [f"Dev-{n:02d}" for n in range(25)]
    for registration_id in in_group:
        await store.put_registration_state(
            sample_registration(instance.id, registration_id, group_id="Floor-3")
        )
    await store.put_registration_state(
        sample_registration(instance.id, "dev-other", group_id="floor-4")
    )
    await store.put_registration_state(sample_registration(instance.id, "dev-single"))
    await store.put_registration_state(
        sample_registration(other_instance.id, "dev-00", group_id="floor-3")
    )

    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        page = await store.list_registration_states_by_group(
            instance.id, "FLOOR-3", after=after, limit=10
        )
        pages += 1
        assert all(
            state.instance_id == instance.id and state.enrollment_group_id == "Floor-3"
            for state in page.items
        )
        seen.extend(state.registration_id for state in page.items)
        if page.next_after is None:
            break
        after = page.next_after
    assert pages == 3
    assert seen == in_group
    empty = await store.list_registration_states_by_group(
        instance.id, "floor-9", after=None, limit=10
    )
    assert empty.items == [] and empty.next_after is None


async def test_all_registration_states_of_an_instance_page_without_gaps(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    ids = [f"reg-{n:02d}" for n in range(21)]
    for n, registration_id in enumerate(ids):
        await store.put_registration_state(
            sample_registration(instance.id, registration_id, group_id="g" if n % 2 else None)
        )
    await store.put_registration_state(sample_registration(other_instance.id, "reg-xx"))
    first = await store.list_registration_states(instance.id, after=None, limit=10)
    second = await store.list_registration_states(instance.id, after=first.next_after, limit=10)
    third = await store.list_registration_states(instance.id, after=second.next_after, limit=10)
    assert third.next_after is None
    assert [s.registration_id for s in first.items + second.items + third.items] == ids


async def test_a_page_limit_below_one_is_refused(store: SqlStore, instance: Instance) -> None:
    with pytest.raises(ValueError):
        await store.list_registration_states(instance.id, after=None, limit=0)


async def test_a_registration_for_a_missing_instance_is_404(store: SqlStore) -> None:
    with pytest.raises(DpsError) as error:
        await store.put_registration_state(sample_registration("inst-ghost", "dev-1"))
    assert error.value.error_code == INSTANCE_NOT_FOUND


# -- operations ----------------------------------------------------------------------------------
async def test_operations_are_stored_updated_and_scoped_to_their_instance(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    operation = Operation(
        operation_id="4.0123456789abcdef.5b1e4a4e-9f0a-4b0c-8d7e-ABCDEF012345",
        instance_id=instance.id,
        registration_id="Dev-1",
        status=RegistrationStatus.ASSIGNING,
        created_at=T0,
        updated_at=T0,
    )
    await store.put_operation(operation)
    assert await store.get_operation(instance.id, operation.operation_id) == operation
    done = dataclasses.replace(
        operation,
        status=RegistrationStatus.FAILED,
        error_code=401002,
        error_message="Unauthorized",
        created_at=LATER,
        updated_at=LATER,
    )
    await store.put_operation(done)
    assert await store.get_operation(instance.id, operation.operation_id) == dataclasses.replace(
        done, created_at=T0
    )
    assert await store.get_operation(other_instance.id, operation.operation_id) is None
    assert await store.get_operation(instance.id, "4.unknown") is None


async def test_old_operations_are_pruned_oldest_first_in_bounded_batches(
    store: SqlStore, instance: Instance
) -> None:
    for n in range(5):
        moment = T0 + timedelta(minutes=n)
        await store.put_operation(
            Operation(f"op-{n}", instance.id, "dev-1", RegistrationStatus.ASSIGNED, moment, moment)
        )
    cutoff = T0 + timedelta(minutes=3)
    assert await store.delete_operations_before(cutoff, limit=2) == 2
    assert await store.get_operation(instance.id, "op-0") is None
    assert await store.get_operation(instance.id, "op-2") is not None
    assert await store.delete_operations_before(cutoff, limit=2) == 1
    assert await store.delete_operations_before(cutoff, limit=2) == 0
    assert [await store.get_operation(instance.id, f"op-{n}") is not None for n in range(5)] == [
        False,
        False,
        False,
        True,
        True,
    ]


# -- CA certificates -----------------------------------------------------------------------------
def _ca(instance_id: str, name: str, *, etag: str = '"c-1"') -> CaCertificate:
    return CaCertificate(
        instance_id=instance_id,
        name=name,
        certificate_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        subject="CN=Root CA",
        sha1_thumbprint="AB" * 20,
        sha256_thumbprint="CD" * 32,
        not_before_utc=datetime(2024, 1, 1, tzinfo=UTC),
        not_after_utc=datetime(2034, 1, 1, tzinfo=UTC),
        is_verified=False,
        verification_code=None,
        etag=etag,
        created_at=T0,
        updated_at=T0,
    )


async def test_ca_certificates_follow_the_create_only_and_etag_rules(
    store: SqlStore, instance: Instance
) -> None:
    cert = _ca(instance.id, "Root-CA")
    assert await store.put_ca_certificate(cert, if_match=None, create_only=True) == cert
    with pytest.raises(DpsError) as exists:
        await store.put_ca_certificate(_ca(instance.id, "root-ca"), if_match=None, create_only=True)
    assert exists.value.error_code == ALREADY_EXISTS and "'root-ca'" in exists.value.message
    verified = dataclasses.replace(
        cert,
        is_verified=True,
        verification_code="ABC123",
        etag='"c-2"',
        created_at=LATER,
        updated_at=LATER,
    )
    with pytest.raises(DpsError) as stale:
        await store.put_ca_certificate(verified, if_match='"c-0"')
    assert stale.value.error_code == ETAG_MISMATCH
    assert await store.put_ca_certificate(verified, if_match='"c-1"') == dataclasses.replace(
        verified, created_at=T0
    )
    await store.put_ca_certificate(_ca(instance.id, "Another-CA"), if_match=None)
    assert [c.name for c in await store.list_ca_certificates(instance.id)] == [
        "Another-CA",
        "Root-CA",
    ]
    with pytest.raises(DpsError):
        await store.delete_ca_certificate(instance.id, "ROOT-CA", if_match='"c-1"')
    assert await store.delete_ca_certificate(instance.id, "ROOT-CA", if_match='"c-2"') is True
    assert await store.get_ca_certificate(instance.id, "root-ca") is None
    assert await store.delete_ca_certificate(instance.id, "root-ca", if_match=None) is False


# -- built-in hub devices --------------------------------------------------------------------------
def _device(instance_id: str, device_id: str, hub: str = "Hub-1.Example.NET") -> HubDevice:
    return HubDevice(
        hub_host_name=hub,
        device_id=device_id,
        instance_id=instance_id,
        auth_kind=DeviceAuthKind.SAS,
        auth={"primaryKey": "cA==", "secondaryKey": "cw=="},
        tags={"floor": 3},
        desired={"rate": 5},
        reported={"firmware": "1.2"},
        etag='"d-1"',
        created_at=T0,
        updated_at=T0,
    )


async def test_hub_devices_round_trip_and_are_matched_case_insensitively(
    store: SqlStore, instance: Instance
) -> None:
    device = _device(instance.id, "Sensor-1")
    assert await store.put_hub_device(device) == device
    assert await store.get_hub_device("hub-1.example.net", "SENSOR-1") == device
    twin_update = dataclasses.replace(
        device,
        reported={"firmware": "1.3"},
        reported_version=2,
        etag='"d-2"',
        created_at=LATER,
        updated_at=LATER,
    )
    assert await store.put_hub_device(twin_update) == dataclasses.replace(
        twin_update, created_at=T0
    )
    assert await store.get_hub_device("hub-2.example.net", "sensor-1") is None
    assert await store.delete_hub_device("HUB-1.example.net", "sensor-1") is True
    assert await store.delete_hub_device("HUB-1.example.net", "sensor-1") is False


async def test_hub_devices_page_per_hub(store: SqlStore, instance: Instance) -> None:
    ids = [f"dev-{n:02d}" for n in range(12)]
    for device_id in ids:
        await store.put_hub_device(_device(instance.id, device_id))
    await store.put_hub_device(_device(instance.id, "dev-00", hub="hub-2.example.net"))
    first = await store.list_hub_devices("hub-1.example.net", after=None, limit=5)
    second = await store.list_hub_devices("hub-1.example.net", after=first.next_after, limit=5)
    third = await store.list_hub_devices("hub-1.example.net", after=second.next_after, limit=5)
    assert third.next_after is None
    assert [d.device_id for d in first.items + second.items + third.items] == ids
    assert [
        d.hub_host_name
        for d in (await store.list_hub_devices("HUB-2.example.net", after=None, limit=5)).items
    ] == ["hub-2.example.net"]


async def test_a_hub_device_of_a_missing_instance_is_404(store: SqlStore) -> None:
    for write in (store.put_hub_device, store.create_hub_device):
        with pytest.raises(DpsError) as error:
            await write(_device("inst-ghost", "dev-1"))
        assert error.value.error_code == INSTANCE_NOT_FOUND


async def test_create_hub_device_writes_only_a_device_that_does_not_exist(
    store: SqlStore, instance: Instance
) -> None:
    device = _device(instance.id, "Sensor-1")
    assert await store.create_hub_device(device) == device
    other = dataclasses.replace(
        device, device_id="SENSOR-1", desired={"rate": 9}, etag='"d-2"', updated_at=LATER
    )
    assert await store.create_hub_device(other) is None
    assert await store.get_hub_device("hub-1.example.net", "sensor-1") == device


async def test_concurrent_creates_of_one_hub_device_let_exactly_one_write(
    store: SqlStore, instance: Instance
) -> None:
    attempts = [
        dataclasses.replace(_device(instance.id, "dev-1"), etag=f'"d-{n}"') for n in range(5)
    ]
    outcomes = await asyncio.gather(*(store.create_hub_device(d) for d in attempts))
    created = [outcome for outcome in outcomes if outcome is not None]
    assert len(created) == 1
    assert await store.get_hub_device("hub-1.example.net", "dev-1") == created[0]


async def test_attestation_types_of_registrations_round_trip(
    store: SqlStore, instance: Instance
) -> None:
    for kind in AttestationType:
        state = dataclasses.replace(
            sample_registration(instance.id, f"dev-{kind.value}"), attestation_type=kind
        )
        assert await store.put_registration_state(state) == state
