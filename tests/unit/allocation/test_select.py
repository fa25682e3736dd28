from __future__ import annotations

import pytest

from opendps.allocation.geo_latency import LatencyTable
from opendps.allocation.hashed import select_hashed
from opendps.allocation.select import candidate_hubs, enrollment_hub_names, select_hub
from opendps.model.enrollment import Attestation, AttestationType, EnrollmentSpec
from opendps.model.errors import NO_HUB, DpsError
from opendps.model.hub import AllocationPolicy, HubKind, LinkedHub

ON1 = LinkedHub("inst", "on1.example.net", HubKind.BUILTIN, location="westeurope")
ON2 = LinkedHub("inst", "on2.example.net", HubKind.BUILTIN, location="eastus")
OFF = LinkedHub(
    "inst", "off.example.net", HubKind.BUILTIN, apply_allocation_policy=False, location="westeurope"
)
LINKED = [ON1, ON2, OFF]
IDS = [f"sel-{n}" for n in range(500)]


def spec(**kwargs: object) -> EnrollmentSpec:
    return EnrollmentSpec(Attestation(AttestationType.SYMMETRIC_KEY), **kwargs)  # type: ignore[arg-type]


def test_hubs_without_apply_allocation_policy_are_excluded_from_hashed() -> None:
    chosen = {select_hub(AllocationPolicy.HASHED, LINKED, rid).host_name for rid in IDS}
    assert chosen == {ON1.host_name, ON2.host_name}


def test_enrollment_hubs_restrict_the_candidates_and_may_name_excluded_hubs() -> None:
    chosen = {
        select_hub(
            AllocationPolicy.HASHED,
            LINKED,
            rid,
            enrollment_hubs=["OFF.example.net", "on2.example.net"],
        ).host_name
        for rid in IDS
    }
    assert chosen == {OFF.host_name, ON2.host_name}


def test_enrollment_hubs_that_are_not_linked_are_ignored() -> None:
    assert candidate_hubs(LINKED, ["ghost.example.net", "on1.example.net"]) == [ON1]
    with pytest.raises(DpsError) as caught:
        select_hub(AllocationPolicy.HASHED, LINKED, "dev", enrollment_hubs=["ghost.example.net"])
    assert caught.value.error_code == NO_HUB


def test_no_linked_hub_fails_with_no_hub_for_every_builtin_policy() -> None:
    for policy in (AllocationPolicy.HASHED, AllocationPolicy.GEO_LATENCY, AllocationPolicy.STATIC):
        with pytest.raises(DpsError) as caught:
            select_hub(policy, [], "dev")
        assert caught.value.error_code == NO_HUB


def test_static_takes_the_first_enrollment_hub() -> None:
    assert (
        select_hub(
            AllocationPolicy.STATIC,
            LINKED,
            "dev",
            enrollment_hubs=["off.example.net", "on1.example.net"],
        )
        == OFF
    )


def test_geo_latency_uses_the_table() -> None:
    table = LatencyTable.from_pairs("eastus", [("eastus", "westeurope", 80)])
    assert {
        select_hub(AllocationPolicy.GEO_LATENCY, LINKED, rid, latency=table).host_name
        for rid in IDS
    } == {ON2.host_name}


def test_geo_latency_without_a_table_is_hashed() -> None:
    for rid in IDS[:100]:
        assert select_hub(AllocationPolicy.GEO_LATENCY, LINKED, rid) == select_hashed(
            [ON1, ON2], rid
        )


def test_custom_is_not_selected_here() -> None:
    with pytest.raises(ValueError):
        select_hub(AllocationPolicy.CUSTOM, LINKED, "dev")


def test_enrollment_hub_names_prefer_iot_hubs_then_the_legacy_field() -> None:
    assert enrollment_hub_names(spec(iot_hubs=("a", "b"), iot_hub_host_name="c")) == ("a", "b")
    assert enrollment_hub_names(spec(iot_hub_host_name="c")) == ("c",)
    assert enrollment_hub_names(spec()) == ()
