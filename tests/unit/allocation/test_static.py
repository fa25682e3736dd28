from __future__ import annotations

import pytest

from opendps.allocation.static import select_static
from opendps.model.errors import NO_HUB, DpsError
from opendps.model.hub import HubKind, LinkedHub

A = LinkedHub("inst", "a.example.net", HubKind.BUILTIN)
B = LinkedHub("inst", "b.example.net", HubKind.BUILTIN, apply_allocation_policy=False)


def test_the_named_hub_is_chosen_case_insensitively() -> None:
    assert select_static([A, B], [A], "A.Example.Net") == A


def test_a_named_hub_outside_the_policy_is_still_allowed() -> None:
    assert select_static([A, B], [A], "b.example.net") == B


def test_a_named_hub_that_is_not_linked_fails_with_no_hub() -> None:
    with pytest.raises(DpsError) as caught:
        select_static([A, B], [A], "gone.example.net")
    assert caught.value.error_code == NO_HUB


def test_without_a_name_the_only_candidate_is_chosen() -> None:
    assert select_static([A, B], [A], None) == A


def test_without_a_name_and_several_candidates_it_fails() -> None:
    with pytest.raises(DpsError) as caught:
        select_static([A, B], [A, B], None)
    assert caught.value.error_code == NO_HUB
