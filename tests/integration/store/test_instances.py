"""Instances, access policies and linked hubs."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from tests.storefixtures import T0, sample_hub, sample_instance, sample_policy

from opendps.model.errors import ALREADY_EXISTS, ETAG_MISMATCH, INSTANCE_NOT_FOUND, DpsError
from opendps.model.instance import Instance, Right
from opendps.store.sql import SqlStore

LATER = T0 + timedelta(hours=1)


async def test_created_instance_is_found_by_id_name_id_scope_and_service_host(
    store: SqlStore, instance: Instance
) -> None:
    assert await store.get_instance(instance.id) == instance
    assert await store.get_instance_by_name("CONTOSO") == instance
    assert await store.get_instance_by_id_scope("0ne00000001") == instance
    assert await store.get_instance_by_service_host("Contoso.Example.NET") == instance
    assert await store.get_instance("inst-unknown") is None
    assert await store.get_instance_by_name("unknown") is None
    assert await store.get_instance_by_id_scope("0ne0000000F") is None
    assert await store.get_instance_by_service_host("unknown.example.net") is None


async def test_instance_keeps_the_spelling_and_utc_timestamps_it_was_created_with(
    store: SqlStore,
) -> None:
    created = await store.create_instance(sample_instance("Contoso-EU"), [], [])
    stored = await store.get_instance(created.id)
    assert stored is not None
    assert stored.name == "Contoso-EU"
    assert stored.created_at == T0 and stored.created_at.utcoffset() == timedelta(0)


async def test_instance_with_a_taken_name_or_id_scope_is_rejected_with_409(
    store: SqlStore, instance: Instance
) -> None:
    same_name = dataclasses.replace(
        sample_instance("CONTOSO", id_scope="0ne000000AA"), id="inst-other"
    )
    with pytest.raises(DpsError) as name_error:
        await store.create_instance(same_name, [], [])
    assert name_error.value.error_code == ALREADY_EXISTS
    assert "CONTOSO" in name_error.value.message

    same_scope = sample_instance("other", id_scope=instance.id_scope)
    with pytest.raises(DpsError) as scope_error:
        await store.create_instance(same_scope, [sample_policy(same_scope.id)], [])
    assert scope_error.value.error_code == ALREADY_EXISTS
    assert instance.id_scope in scope_error.value.message
    # Nothing of the refused instance was written, not even its policies.
    assert await store.get_instance(same_scope.id) is None
    assert await store.list_access_policies(same_scope.id) == []


async def test_create_instance_stores_its_policies_and_hubs(
    store: SqlStore, instance: Instance
) -> None:
    policies = await store.list_access_policies(instance.id)
    assert [policy.name for policy in policies] == ["provisioningserviceowner"]
    assert (
        policies[0].rights
        == Right.SERVICE_CONFIG
        | Right.ENROLLMENT_READ
        | Right.ENROLLMENT_WRITE
        | Right.DEVICE_CONNECT
        | Right.REGISTRATION_STATUS_READ
        | Right.REGISTRATION_STATUS_WRITE
    )
    assert await store.list_linked_hubs(instance.id) == [sample_hub(instance.id)]


async def test_policies_and_hubs_of_another_instance_are_refused_at_creation(
    store: SqlStore,
) -> None:
    created = sample_instance("contoso")
    with pytest.raises(ValueError):
        await store.create_instance(created, [sample_policy("inst-elsewhere")], [])


async def test_list_instances_returns_every_instance_in_name_order(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    assert [each.name for each in await store.list_instances()] == ["contoso", "fabrikam"]


async def test_update_instance_follows_the_etag_rules_and_keeps_created_at(
    store: SqlStore, instance: Instance
) -> None:
    renamed = dataclasses.replace(
        instance, name="Contoso2", etag='"instance-2"', created_at=LATER, updated_at=LATER
    )
    with pytest.raises(DpsError) as stale:
        await store.update_instance(renamed, if_match='"stale"')
    assert stale.value.error_code == ETAG_MISMATCH
    assert await store.get_instance(instance.id) == instance

    stored = await store.update_instance(renamed, if_match=instance.etag)
    assert stored == dataclasses.replace(renamed, created_at=T0)
    assert await store.get_instance_by_name("contoso2") == stored

    again = dataclasses.replace(stored, etag='"instance-3"')
    assert (await store.update_instance(again, if_match="*")).etag == '"instance-3"'
    last = dataclasses.replace(again, etag='"instance-4"')
    assert (await store.update_instance(last, if_match=None)).etag == '"instance-4"'


async def test_update_of_a_missing_instance_is_404_or_412(store: SqlStore) -> None:
    missing = sample_instance("ghost")
    with pytest.raises(DpsError) as unconditional:
        await store.update_instance(missing, if_match=None)
    assert unconditional.value.error_code == INSTANCE_NOT_FOUND
    with pytest.raises(DpsError) as conditional:
        await store.update_instance(missing, if_match="*")
    assert conditional.value.error_code == ETAG_MISMATCH


async def test_update_instance_to_a_taken_name_is_rejected_with_409(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    clash = dataclasses.replace(other_instance, name="CONTOSO")
    with pytest.raises(DpsError) as error:
        await store.update_instance(clash, if_match=None)
    assert error.value.error_code == ALREADY_EXISTS
    assert (await store.get_instance(other_instance.id)) == other_instance


async def test_a_service_host_shared_by_two_instances_answers_with_the_oldest(
    store: SqlStore,
) -> None:
    older = dataclasses.replace(
        sample_instance("b-old", id_scope="0ne000000B1"), service_host_name="localhost"
    )
    newer = dataclasses.replace(
        sample_instance("a-new", id_scope="0ne000000A1"),
        service_host_name="LOCALHOST",
        created_at=LATER,
    )
    await store.create_instance(newer, [], [])
    await store.create_instance(older, [], [])
    found = await store.get_instance_by_service_host("localhost")
    assert found is not None and found.id == older.id


async def test_deleting_a_missing_instance_returns_false(store: SqlStore) -> None:
    assert await store.delete_instance("inst-ghost") is False


# -- access policies -----------------------------------------------------------------------------
async def test_access_policies_are_matched_case_insensitively_and_keep_their_spelling(
    store: SqlStore, instance: Instance
) -> None:
    policy = dataclasses.replace(
        sample_policy(instance.id, "EnrollmentReader"), rights=Right.ENROLLMENT_READ
    )
    assert await store.put_access_policy(policy) == policy
    assert await store.get_access_policy(instance.id, "enrollmentreader") == policy
    replaced = dataclasses.replace(
        policy, primary_key="bmV3", rights=Right.ENROLLMENT_READ | Right.ENROLLMENT_WRITE
    )
    assert await store.put_access_policy(replaced) == replaced
    assert await store.get_access_policy(instance.id, "ENROLLMENTREADER") == replaced
    assert [p.name for p in await store.list_access_policies(instance.id)] == [
        "EnrollmentReader",
        "provisioningserviceowner",
    ]
    assert await store.delete_access_policy(instance.id, "enrollmentREADER") is True
    assert await store.delete_access_policy(instance.id, "enrollmentREADER") is False
    assert await store.get_access_policy(instance.id, "EnrollmentReader") is None


async def test_policies_named_alike_are_found_across_instances(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    found = await store.list_access_policies_named("ProvisioningServiceOwner")
    assert sorted(policy.instance_id for policy in found) == sorted(
        [instance.id, other_instance.id]
    )
    assert await store.list_access_policies_named("nobody") == []


async def test_a_policy_for_a_missing_instance_is_404(store: SqlStore) -> None:
    with pytest.raises(DpsError) as error:
        await store.put_access_policy(sample_policy("inst-ghost"))
    assert error.value.error_code == INSTANCE_NOT_FOUND
    assert "inst-ghost" in error.value.message


# -- linked hubs ---------------------------------------------------------------------------------
async def test_linked_hubs_follow_the_etag_rules_and_keep_created_at(
    store: SqlStore, instance: Instance
) -> None:
    hub = sample_hub(instance.id, "Hub-2.Example.NET")
    assert await store.put_linked_hub(hub) == hub
    changed = dataclasses.replace(
        hub,
        allocation_weight=5,
        location="westeurope",
        etag='"hub-2"',
        created_at=LATER,
        updated_at=LATER,
    )
    with pytest.raises(DpsError) as stale:
        await store.put_linked_hub(changed, if_match='"stale"')
    assert stale.value.error_code == ETAG_MISMATCH
    stored = await store.put_linked_hub(changed, if_match=hub.etag)
    assert stored == dataclasses.replace(changed, created_at=T0)
    assert await store.get_linked_hub(instance.id, "hub-2.example.net") == stored
    with pytest.raises(DpsError) as missing:
        await store.put_linked_hub(sample_hub(instance.id, "hub-9.example.net"), if_match="*")
    assert missing.value.error_code == ETAG_MISMATCH
    assert [h.host_name for h in await store.list_linked_hubs(instance.id)] == [
        "hub-1.example.net",
        "Hub-2.Example.NET",
    ]
    assert await store.delete_linked_hub(instance.id, "HUB-2.example.net") is True
    assert await store.delete_linked_hub(instance.id, "HUB-2.example.net") is False
    assert await store.get_linked_hub(instance.id, "hub-2.example.net") is None
