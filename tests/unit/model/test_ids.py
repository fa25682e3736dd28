from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendps.model.errors import INVALID_ID, INVALID_REGISTRATION_ID, DpsError
from opendps.model.ids import (
    generate_id_scope,
    is_id_scope,
    parse_device_id,
    parse_enrollment_group_id,
    parse_name,
    parse_registration_id,
    registration_key,
)


@pytest.mark.parametrize(
    "value", ["a", "sensor-001", "Dev.1:x_y-", "A" * 128, "sn0123FE0CF960432D01"]
)
def test_valid_registration_ids_are_returned_unchanged(value: str) -> None:
    assert parse_registration_id(value) == value


@pytest.mark.parametrize(
    "value", ["", "A" * 129, "-lead", ".lead", "trail.", "trail_", "sp ace", "slash/", "ü"]
)
def test_invalid_registration_ids_are_rejected_with_400001(value: str) -> None:
    with pytest.raises(DpsError) as err:
        parse_registration_id(value)
    assert err.value.error_code == INVALID_REGISTRATION_ID


@given(st.text(max_size=200))
def test_any_text_is_either_a_registration_id_or_a_dps_error(value: str) -> None:
    try:
        assert parse_registration_id(value) == value
    except DpsError as err:
        assert err.error_code == INVALID_REGISTRATION_ID


def test_group_ids_share_the_grammar_but_report_their_own_name() -> None:
    assert parse_enrollment_group_id("grp-1") == "grp-1"
    with pytest.raises(DpsError) as err:
        parse_enrollment_group_id("grp/1")
    assert err.value.error_code == INVALID_ID and "Enrollment group ID" in err.value.message


def test_device_ids_allow_azures_extra_characters() -> None:
    assert parse_device_id("dev$(1)@x") == "dev$(1)@x"
    with pytest.raises(DpsError):
        parse_device_id("dev 1")


def test_names_are_short_and_url_safe() -> None:
    assert parse_name("contoso-prod") == "contoso-prod"
    for bad in ("", "-x", "a" * 65, "a/b"):
        with pytest.raises(DpsError):
            parse_name(bad)


def test_registration_keys_fold_case() -> None:
    assert registration_key("SN0123Fe") == "sn0123fe"


def test_generated_id_scopes_have_azures_form_and_differ() -> None:
    scopes = {generate_id_scope() for _ in range(50)}
    assert len(scopes) == 50
    assert all(is_id_scope(scope) for scope in scopes)
    assert not is_id_scope("0ne0000abc1") and not is_id_scope("1ne00000ABC")
