from __future__ import annotations

from collections import Counter

from opendps.allocation.geo_latency import LatencyTable, select_geo_latency
from opendps.allocation.hashed import select_hashed
from opendps.model.hub import HubKind, LinkedHub

IDS = [f"geo-{n}" for n in range(400)]


def hub(name: str, location: str | None, weight: int = 1) -> LinkedHub:
    return LinkedHub("inst", name, HubKind.BUILTIN, allocation_weight=weight, location=location)


EU = hub("eu.example.net", "westeurope")
US = hub("us.example.net", "eastus")
ASIA = hub("asia.example.net", "japaneast")
TABLE = LatencyTable.from_pairs(
    "NorthEurope",
    [
        ("northeurope", "westeurope", 15),
        ("northeurope", "eastus", 80),
        ("NorthEurope", "japaneast", 230),
    ],
)


def test_the_nearest_hub_wins_for_every_device() -> None:
    assert {select_geo_latency([US, ASIA, EU], rid, TABLE).host_name for rid in IDS} == {
        EU.host_name
    }


def test_same_region_beats_any_configured_latency() -> None:
    local = hub("local.example.net", "northeurope")
    assert select_geo_latency([EU, local], "dev-1", TABLE) == local


def test_table_is_symmetric_and_case_insensitive() -> None:
    table = LatencyTable.from_pairs("EastUS", [("westeurope", "EASTUS", 70)])
    assert table.latency_to("WestEurope") == 70
    assert table.latency_to("eastus") == 0


def test_unknown_location_or_pair_is_farther_than_any_known_one() -> None:
    unknown = hub("nowhere.example.net", None)
    unlisted = hub("mars.example.net", "marsnorth")
    assert {select_geo_latency([unknown, unlisted, ASIA], rid, TABLE).host_name for rid in IDS} == {
        ASIA.host_name
    }


def test_ties_are_broken_by_weighted_hashing() -> None:
    eu2 = hub("eu2.example.net", "westeurope", weight=3)
    picks = Counter(select_geo_latency([EU, eu2, US], rid, TABLE).host_name for rid in IDS)
    assert set(picks) == {"eu.example.net", "eu2.example.net"}
    assert all(
        select_geo_latency([EU, eu2, US], rid, TABLE) == select_hashed([EU, eu2], rid)
        for rid in IDS
    )


def test_without_a_node_region_it_is_hashed_over_all_candidates() -> None:
    for rid in IDS:
        assert select_geo_latency([EU, US, ASIA], rid, LatencyTable()) == select_hashed(
            [EU, US, ASIA], rid
        )


def test_zero_weight_nearest_hub_is_skipped() -> None:
    off = hub("off.example.net", "northeurope", weight=0)
    assert select_geo_latency([off, US], "dev", TABLE) == US
