"""Individual enrollments and enrollment groups: round trips, etag rules, case, paging, tenancy."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from tests.storefixtures import T0, sample_enrollment, sample_group, symmetric_spec

from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    CustomAllocationDefinition,
    EnrollmentSpec,
    IndividualEnrollment,
    ProvisioningStatus,
    ReprovisionPolicy,
    TpmAttestation,
    X509Attestation,
    X509CaReferences,
    X509Certificate,
    X509CertificateInfo,
    X509CertificatePair,
)
from opendps.model.errors import ALREADY_EXISTS, ETAG_MISMATCH, INSTANCE_NOT_FOUND, DpsError
from opendps.model.hub import AllocationPolicy
from opendps.model.instance import Instance
from opendps.store.sql import SqlStore

LATER = T0 + timedelta(minutes=5)


def _certificate(cn: str) -> X509Certificate:
    return X509Certificate(
        certificate_pem=f"-----BEGIN CERTIFICATE-----\n{cn}\n-----END CERTIFICATE-----\n",
        info=X509CertificateInfo(
            subject_name=f"CN={cn}",
            sha1_thumbprint="AB" * 20,
            sha256_thumbprint="CD" * 32,
            issuer_name="CN=Issuer",
            not_before_utc=datetime(2024, 1, 1, tzinfo=UTC),
            not_after_utc=datetime(2034, 1, 1, tzinfo=UTC),
            serial_number="01",
            version=3,
        ),
    )


SPECS = {
    "symmetric": symmetric_spec(),
    "x509-client": EnrollmentSpec(
        attestation=Attestation(
            type=AttestationType.X509,
            x509=X509Attestation(
                client_certificates=X509CertificatePair(primary=_certificate("device-1"))
            ),
        ),
        provisioning_status=ProvisioningStatus.DISABLED,
        iot_hubs=("hub-1.example.net", "hub-2.example.net"),
        iot_hub_host_name="hub-1.example.net",
        allocation_policy=AllocationPolicy.CUSTOM,
        custom_allocation=CustomAllocationDefinition(
            "https://fn.example.net/api/allocate", "2021-10-01"
        ),
        reprovision_policy=ReprovisionPolicy(update_hub_assignment=True, migrate_device_data=False),
        initial_twin={
            "tags": {"floor": 3},
            "properties": {"desired": {"rate": 5, "$metadata": {}, "$version": 1}},
        },
        iot_edge=True,
    ),
    "x509-ca-references": EnrollmentSpec(
        attestation=Attestation(
            type=AttestationType.X509,
            x509=X509Attestation(ca_references=X509CaReferences("root-ca", None)),
        ),
    ),
    "x509-signing": EnrollmentSpec(
        attestation=Attestation(
            type=AttestationType.X509,
            x509=X509Attestation(
                signing_certificates=X509CertificatePair(
                    primary=_certificate("ca-1"), secondary=_certificate("ca-2")
                )
            ),
        ),
        reprovision_policy=ReprovisionPolicy(
            update_hub_assignment=False, migrate_device_data=False
        ),
    ),
    "tpm": EnrollmentSpec(
        attestation=Attestation(
            type=AttestationType.TPM, tpm=TpmAttestation("AToAAQALAAMAsgAg", None)
        ),
        initial_twin={},
    ),
    "none": EnrollmentSpec(attestation=Attestation(type=AttestationType.NONE)),
}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
async def test_individual_enrollment_round_trips_every_field(
    store: SqlStore, instance: Instance, spec: EnrollmentSpec
) -> None:
    enrollment = dataclasses.replace(
        sample_enrollment(instance.id, "Sensor-001"),
        spec=spec,
        device_id="device-001",
        optional_device_information={"version": 2, "properties": {"serial": "X1"}},
    )
    assert await store.put_individual_enrollment(enrollment, if_match=None) == enrollment
    assert await store.get_individual_enrollment(instance.id, "Sensor-001") == enrollment


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
async def test_enrollment_group_round_trips_every_field(
    store: SqlStore, instance: Instance, spec: EnrollmentSpec
) -> None:
    group = dataclasses.replace(sample_group(instance.id, "Floor-3"), spec=spec)
    assert await store.put_enrollment_group(group, if_match=None) == group
    assert await store.get_enrollment_group(instance.id, "floor-3") == group


async def test_timestamps_in_another_zone_are_stored_as_utc(
    store: SqlStore, instance: Instance
) -> None:
    plus_two = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC).astimezone(
        timezone(timedelta(hours=2))
    )
    stored = await store.put_individual_enrollment(
        sample_enrollment(instance.id, "tz-1", at=plus_two), if_match=None
    )
    assert stored.created_at == plus_two and stored.created_at is not None
    assert stored.created_at.utcoffset() == timedelta(0)
    fetched = await store.get_individual_enrollment(instance.id, "tz-1")
    assert fetched is not None and fetched.updated_at is not None
    assert fetched.updated_at.tzinfo == UTC and fetched.updated_at.hour == 12


async def test_naive_timestamps_are_refused(store: SqlStore, instance: Instance) -> None:
    naive = sample_enrollment(instance.id, "naive-1", at=datetime(2024, 5, 1, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.put_individual_enrollment(naive, if_match=None)


async def test_unconditional_put_creates_then_replaces_keeping_created_at(
    store: SqlStore, instance: Instance
) -> None:
    first = sample_enrollment(instance.id, "dev-1")
    assert await store.put_individual_enrollment(first, if_match=None) == first
    second = dataclasses.replace(
        first, device_id="renamed", etag='"e-2"', created_at=LATER, updated_at=LATER
    )
    stored = await store.put_individual_enrollment(second, if_match=None)
    assert stored == dataclasses.replace(second, created_at=T0)
    assert await store.get_individual_enrollment(instance.id, "dev-1") == stored


async def test_put_with_star_needs_an_existing_enrollment(
    store: SqlStore, instance: Instance
) -> None:
    enrollment = sample_enrollment(instance.id, "dev-1")
    with pytest.raises(DpsError) as missing:
        await store.put_individual_enrollment(enrollment, if_match="*")
    assert missing.value.error_code == ETAG_MISMATCH
    assert "'dev-1'" in missing.value.message and "does not exist" in missing.value.message
    assert await store.get_individual_enrollment(instance.id, "dev-1") is None
    await store.put_individual_enrollment(enrollment, if_match=None)
    replaced = dataclasses.replace(enrollment, etag='"e-2"', updated_at=LATER)
    assert (await store.put_individual_enrollment(replaced, if_match="*")).etag == '"e-2"'


async def test_put_with_matching_etag_replaces_and_stale_etag_is_rejected_with_412(
    store: SqlStore, instance: Instance
) -> None:
    enrollment = sample_enrollment(instance.id, "dev-1", etag='"e-1"')
    await store.put_individual_enrollment(enrollment, if_match=None)
    second = dataclasses.replace(enrollment, etag='"e-2"', device_id="two", updated_at=LATER)
    assert await store.put_individual_enrollment(second, if_match='"e-1"') == second
    third = dataclasses.replace(second, etag='"e-3"', device_id="three")
    with pytest.raises(DpsError) as stale:
        await store.put_individual_enrollment(third, if_match='"e-1"')
    assert stale.value.error_code == ETAG_MISMATCH
    assert stale.value.http_status == 412
    assert "'dev-1'" in stale.value.message and "etag" in stale.value.message
    assert await store.get_individual_enrollment(instance.id, "dev-1") == second


async def test_create_only_is_rejected_with_409_when_the_id_exists_in_any_spelling(
    store: SqlStore, instance: Instance
) -> None:
    enrollment = sample_enrollment(instance.id, "Dev-1")
    assert (
        await store.put_individual_enrollment(enrollment, if_match=None, create_only=True)
        == enrollment
    )
    clash = dataclasses.replace(enrollment, registration_id="DEV-1", etag='"other"')
    with pytest.raises(DpsError) as error:
        await store.put_individual_enrollment(clash, if_match=None, create_only=True)
    assert error.value.error_code == ALREADY_EXISTS
    assert "'DEV-1'" in error.value.message
    assert await store.get_individual_enrollment(instance.id, "dev-1") == enrollment


async def test_create_only_with_if_match_reports_whichever_precondition_fails(
    store: SqlStore, instance: Instance
) -> None:
    enrollment = sample_enrollment(instance.id, "dev-1")
    with pytest.raises(DpsError) as absent:
        await store.put_individual_enrollment(enrollment, if_match="*", create_only=True)
    assert absent.value.error_code == ETAG_MISMATCH
    await store.put_individual_enrollment(enrollment, if_match=None)
    with pytest.raises(DpsError) as present:
        await store.put_individual_enrollment(
            enrollment, if_match=enrollment.etag, create_only=True
        )
    assert present.value.error_code == ALREADY_EXISTS


async def test_ids_are_case_insensitive_and_the_latest_spelling_is_kept(
    store: SqlStore, instance: Instance
) -> None:
    await store.put_individual_enrollment(
        sample_enrollment(instance.id, "Sensor-ABC"), if_match=None
    )
    found = await store.get_individual_enrollment(instance.id, "sensor-abc")
    assert found is not None and found.registration_id == "Sensor-ABC"
    await store.put_individual_enrollment(
        sample_enrollment(instance.id, "SENSOR-abc"), if_match=None
    )
    assert await store.count_individual_enrollments(instance.id) == 1
    again = await store.get_individual_enrollment(instance.id, "Sensor-ABC")
    assert again is not None and again.registration_id == "SENSOR-abc"


async def test_delete_follows_the_etag_rules(store: SqlStore, instance: Instance) -> None:
    assert await store.delete_individual_enrollment(instance.id, "dev-1", if_match=None) is False
    for if_match in ("*", '"e-1"'):
        with pytest.raises(DpsError) as missing:
            await store.delete_individual_enrollment(instance.id, "dev-1", if_match=if_match)
        assert missing.value.error_code == ETAG_MISMATCH
    await store.put_individual_enrollment(
        sample_enrollment(instance.id, "Dev-1", etag='"e-1"'), if_match=None
    )
    with pytest.raises(DpsError) as stale:
        await store.delete_individual_enrollment(instance.id, "dev-1", if_match='"e-0"')
    assert stale.value.error_code == ETAG_MISMATCH
    assert await store.get_individual_enrollment(instance.id, "dev-1") is not None
    assert await store.delete_individual_enrollment(instance.id, "DEV-1", if_match='"e-1"') is True
    assert await store.get_individual_enrollment(instance.id, "dev-1") is None
    await store.put_individual_enrollment(sample_enrollment(instance.id, "dev-2"), if_match=None)
    assert await store.delete_individual_enrollment(instance.id, "dev-2", if_match="*") is True
    await store.put_individual_enrollment(sample_enrollment(instance.id, "dev-3"), if_match=None)
    assert await store.delete_individual_enrollment(instance.id, "dev-3", if_match=None) is True


async def _all_pages(
    store: SqlStore, instance_id: str, limit: int
) -> list[list[IndividualEnrollment]]:
    pages: list[list[IndividualEnrollment]] = []
    after: str | None = None
    while True:
        page = await store.list_individual_enrollments(instance_id, after=after, limit=limit)
        pages.append(page.items)
        if page.next_after is None:
            return pages
        assert page.next_after == page.items[-1].registration_id.lower()
        after = page.next_after


@pytest.mark.parametrize("total", [25, 30])
async def test_keyset_paging_visits_every_enrollment_once(
    store: SqlStore, instance: Instance, total: int
) -> None:
    ids = [f"Dev-{n:03d}" if n % 2 else f"dev.{n:03d}" for n in range(total)]
    for registration_id in ids:
        await store.put_individual_enrollment(
            sample_enrollment(instance.id, registration_id), if_match=None
        )
    pages = await _all_pages(store, instance.id, limit=10)
    assert [len(page) for page in pages] == [10] * (total // 10) + (
        [total % 10] if total % 10 else []
    )
    seen = [e.registration_id for page in pages for e in page]
    assert sorted(seen) == sorted(ids)
    assert len(set(seen)) == total
    assert await store.count_individual_enrollments(instance.id) == total


async def test_paging_continues_correctly_after_a_concurrent_delete(
    store: SqlStore, instance: Instance
) -> None:
    for n in range(6):
        await store.put_individual_enrollment(
            sample_enrollment(instance.id, f"dev-{n}"), if_match=None
        )
    first = await store.list_individual_enrollments(instance.id, after=None, limit=3)
    assert first.next_after == "dev-2"
    await store.delete_individual_enrollment(instance.id, "dev-2", if_match=None)
    second = await store.list_individual_enrollments(instance.id, after=first.next_after, limit=3)
    assert [e.registration_id for e in second.items] == ["dev-3", "dev-4", "dev-5"]
    assert second.next_after is None


async def test_an_empty_instance_lists_one_empty_last_page(
    store: SqlStore, instance: Instance
) -> None:
    page = await store.list_individual_enrollments(instance.id, after=None, limit=10)
    assert page.items == [] and page.next_after is None
    assert await store.count_individual_enrollments(instance.id) == 0


async def test_the_same_registration_id_lives_separately_in_two_instances(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    mine = sample_enrollment(instance.id, "shared-1", etag='"mine"')
    theirs = sample_enrollment(other_instance.id, "SHARED-1", etag='"theirs"')
    await store.put_individual_enrollment(mine, if_match=None)
    await store.put_individual_enrollment(theirs, if_match=None, create_only=True)
    assert await store.get_individual_enrollment(instance.id, "shared-1") == mine
    assert await store.get_individual_enrollment(other_instance.id, "shared-1") == theirs
    with pytest.raises(DpsError):
        await store.put_individual_enrollment(
            dataclasses.replace(mine, etag='"x"'), if_match='"theirs"'
        )
    assert (
        await store.delete_individual_enrollment(other_instance.id, "shared-1", if_match=None)
        is True
    )
    assert await store.get_individual_enrollment(instance.id, "shared-1") == mine
    assert [
        e.registration_id
        for e in (await store.list_individual_enrollments(instance.id, after=None, limit=10)).items
    ] == ["shared-1"]
    assert (
        await store.list_individual_enrollments(other_instance.id, after=None, limit=10)
    ).items == []
    assert await store.count_individual_enrollments(other_instance.id) == 0


async def test_an_enrollment_for_a_missing_instance_is_404(store: SqlStore) -> None:
    with pytest.raises(DpsError) as error:
        await store.put_individual_enrollment(
            sample_enrollment("inst-ghost", "dev-1"), if_match=None
        )
    assert error.value.error_code == INSTANCE_NOT_FOUND


async def test_concurrent_writes_with_the_same_etag_let_exactly_one_win(
    store: SqlStore, instance: Instance
) -> None:
    base = sample_enrollment(instance.id, "contended", etag='"e-0"')
    await store.put_individual_enrollment(base, if_match=None)

    async def attempt(n: int) -> str:
        try:
            await store.put_individual_enrollment(
                dataclasses.replace(base, etag=f'"e-{n + 1}"'), if_match='"e-0"'
            )
        except DpsError as error:
            assert error.error_code == ETAG_MISMATCH
            return "lost"
        return "won"

    outcomes = await asyncio.gather(*(attempt(n) for n in range(8)))
    assert outcomes.count("won") == 1
    stored = await store.get_individual_enrollment(instance.id, "contended")
    assert stored is not None and stored.etag != '"e-0"'


async def test_concurrent_unconditional_writers_all_succeed(
    store: SqlStore, instance: Instance
) -> None:
    await asyncio.gather(
        *(
            store.put_individual_enrollment(
                sample_enrollment(instance.id, f"par-{n}"), if_match=None
            )
            for n in range(40)
        )
    )
    assert await store.count_individual_enrollments(instance.id) == 40


# -- enrollment groups -----------------------------------------------------------------------------
async def test_enrollment_groups_follow_the_etag_and_create_only_rules(
    store: SqlStore, instance: Instance
) -> None:
    group = sample_group(instance.id, "Floor-3", etag='"g-1"')
    assert await store.put_enrollment_group(group, if_match=None, create_only=True) == group
    with pytest.raises(DpsError) as exists:
        await store.put_enrollment_group(
            dataclasses.replace(group, enrollment_group_id="FLOOR-3"),
            if_match=None,
            create_only=True,
        )
    assert exists.value.error_code == ALREADY_EXISTS and "'FLOOR-3'" in exists.value.message
    newer = dataclasses.replace(group, etag='"g-2"', created_at=LATER, updated_at=LATER)
    with pytest.raises(DpsError) as stale:
        await store.put_enrollment_group(newer, if_match='"g-0"')
    assert stale.value.error_code == ETAG_MISMATCH
    assert await store.put_enrollment_group(newer, if_match='"g-1"') == dataclasses.replace(
        newer, created_at=T0
    )
    with pytest.raises(DpsError):
        await store.put_enrollment_group(sample_group(instance.id, "floor-9"), if_match="*")
    with pytest.raises(DpsError) as delete_stale:
        await store.delete_enrollment_group(instance.id, "floor-3", if_match='"g-1"')
    assert delete_stale.value.error_code == ETAG_MISMATCH
    assert await store.delete_enrollment_group(instance.id, "floor-3", if_match='"g-2"') is True
    assert await store.delete_enrollment_group(instance.id, "floor-3", if_match=None) is False
    assert await store.get_enrollment_group(instance.id, "floor-3") is None


async def test_enrollment_groups_page_by_key_without_gaps(
    store: SqlStore, instance: Instance, other_instance: Instance
) -> None:
    ids = [f"Group-{n:02d}" for n in range(23)]
    for group_id in ids:
        await store.put_enrollment_group(sample_group(instance.id, group_id), if_match=None)
    await store.put_enrollment_group(sample_group(other_instance.id, "group-00"), if_match=None)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        page = await store.list_enrollment_groups(instance.id, after=after, limit=10)
        pages += 1
        seen.extend(group.enrollment_group_id for group in page.items)
        if page.next_after is None:
            break
        after = page.next_after
    assert pages == 3
    assert seen == ids
