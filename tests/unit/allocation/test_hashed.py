from __future__ import annotations

from collections import Counter

import pytest

from opendps.allocation.hashed import hub_score, select_hashed
from opendps.model.errors import NO_HUB, DpsError
from opendps.model.hub import HubKind, LinkedHub

IDS = [f"device-{n:05d}" for n in range(2000)]


def hub(name: str, weight: int = 1) -> LinkedHub:
    return LinkedHub("inst", name, HubKind.BUILTIN, allocation_weight=weight)


def test_weights_one_to_three_split_about_a_quarter_to_three_quarters() -> None:
    light, heavy = hub("light.example.net", 1), hub("heavy.example.net", 3)
    counts = Counter(select_hashed([light, heavy], rid).host_name for rid in IDS)
    # Binomial(2000, 0.25) has sd ≈ 19.4 (1 %); 3 points (≈ 3 sd) of tolerance.
    assert abs(counts["light.example.net"] / len(IDS) - 0.25) < 0.03
    assert abs(counts["heavy.example.net"] / len(IDS) - 0.75) < 0.03


def test_equal_weights_split_evenly_over_three_hubs() -> None:
    hubs = [hub(f"h{n}.example.net") for n in range(3)]
    counts = Counter(select_hashed(hubs, rid).host_name for rid in IDS)
    for name in counts:
        assert abs(counts[name] / len(IDS) - 1 / 3) < 0.035


def test_choice_is_deterministic_and_ignores_case_and_order() -> None:
    a, b = hub("a.example.net"), hub("b.example.net", 2)
    for rid in IDS[:200]:
        first = select_hashed([a, b], rid)
        assert select_hashed([b, a], rid) == first
        assert select_hashed([a, b], rid.upper()) == first


def test_adding_a_hub_only_moves_devices_to_the_new_hub() -> None:
    a, b, c = hub("a.example.net"), hub("b.example.net"), hub("c.example.net")
    for rid in IDS:
        before = select_hashed([a, b], rid)
        after = select_hashed([a, b, c], rid)
        assert after in (before, c)


def test_zero_weight_hub_is_never_chosen() -> None:
    a, off = hub("a.example.net"), hub("off.example.net", 0)
    assert all(select_hashed([a, off], rid) == a for rid in IDS[:300])


def test_no_positive_weight_fails_with_no_hub() -> None:
    with pytest.raises(DpsError) as caught:
        select_hashed([hub("off.example.net", 0)], "dev")
    assert caught.value.error_code == NO_HUB
    with pytest.raises(DpsError):
        select_hashed([], "dev")


def test_score_is_positive_and_scales_with_weight() -> None:
    assert hub_score("dev", hub("x", 1)) > 0
    assert hub_score("dev", hub("x", 4)) == pytest.approx(4 * hub_score("dev", hub("x", 1)))
