"""If-Match normalisation before the store's atomic compare (protocol.md §7.2)."""

from __future__ import annotations

import pytest

from opendps.service_api.etag import if_match_for_store

STORED = '"13003fea-0000-0300-0000-62d1d5e50000"'


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_header_means_unconditional(header: str | None) -> None:
    assert if_match_for_store(header, STORED) is None


def test_star_is_passed_on_whether_or_not_the_object_exists() -> None:
    assert if_match_for_store("*", STORED) == "*"
    assert if_match_for_store(" * ", None) == "*"


@pytest.mark.parametrize("header", [STORED, STORED.strip('"'), "W/" + STORED, f" {STORED} "])
def test_the_stored_etag_with_or_without_quotes_matches(header: str) -> None:
    assert if_match_for_store(header, STORED) == STORED


def test_another_etag_is_passed_on_unchanged_for_the_store_to_refuse() -> None:
    assert if_match_for_store('"other"', STORED) == '"other"'
    assert if_match_for_store('"other"', None) == '"other"'
