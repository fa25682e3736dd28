"""The store-free half of device attestation: token form, `sr`, expiry (engine/lookup.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendps.attestation.sas import SasToken, build_sas_token
from opendps.engine.api import SasCredential
from opendps.engine.lookup import check_device_token, normalise_id_scope
from opendps.engine.refusal import AttestationRefused
from opendps.model.errors import UNAUTHORIZED, DpsError

KEY = "Qo/tl0OMJVczFo9NZmMsiSRof5GTI3Bk1I8Pwy2UV2c="
NOW = 1_767_225_000
SKEW = 300


def token(resource: str, expiry: int = NOW + 3600, *, encode: bool = True) -> SasCredential:
    return SasCredential(
        build_sas_token(resource, KEY, expiry, key_name="registration", encode_sr=encode)
    )


def refused(
    credential: SasCredential | None, scope: str = "0ne00000ABC", rid: str = "sensor-001"
) -> AttestationRefused:
    with pytest.raises(AttestationRefused) as caught:
        check_device_token(credential, scope, rid, NOW, SKEW)
    assert caught.value.error_code == UNAUTHORIZED and caught.value.message == "Unauthorized"
    return caught.value


@pytest.mark.parametrize("encode", [True, False])
def test_encoded_and_raw_sr_both_name_the_device(encode: bool) -> None:
    parsed = check_device_token(
        token("0ne00000ABC/registrations/sensor-001", encode=encode),
        "0ne00000ABC",
        "sensor-001",
        NOW,
        SKEW,
    )
    assert parsed.resource == "0ne00000ABC/registrations/sensor-001"


def test_sr_is_compared_case_insensitively() -> None:
    check_device_token(
        token("0NE00000abc/REGISTRATIONS/Sensor-001"), "0ne00000ABC", "sensor-001", NOW, SKEW
    )


def test_a_token_for_another_device_or_scope_is_refused() -> None:
    refused(token("0ne00000ABC/registrations/sensor-002"))
    refused(token("0ne00000ABD/registrations/sensor-001"))
    refused(token("0ne00000ABC/registrations/sensor-001/extra"))
    refused(token("0ne00000ABC"))


def test_missing_credential_is_refused() -> None:
    refused(None)


def test_expiry_is_enforced_after_the_skew() -> None:
    check_device_token(
        token("0ne00000ABC/registrations/sensor-001", NOW - SKEW + 1),
        "0ne00000ABC",
        "sensor-001",
        NOW,
        SKEW,
    )
    assert (
        refused(token("0ne00000ABC/registrations/sensor-001", NOW - SKEW)).reason
        == "SAS token expired"
    )


def test_refusals_for_wrong_device_and_no_credential_say_the_same() -> None:
    assert (
        refused(None).message
        == refused(token("0ne00000ABC/registrations/other")).message
        == "Unauthorized"
    )


@given(st.text(max_size=200))
def test_any_credential_text_gives_a_token_or_401(text: str) -> None:
    for candidate in (
        text,
        "SharedAccessSignature " + text,
        f"SharedAccessSignature sr=0ne00000ABC%2Fregistrations%2Fsensor-001&{text}",
    ):
        try:
            result = check_device_token(
                SasCredential(candidate), "0ne00000ABC", "sensor-001", NOW, SKEW
            )
        except DpsError as err:
            assert err.error_code == UNAUTHORIZED
        else:
            assert isinstance(result, SasToken)


def test_id_scope_case_is_normalised_to_azures_form() -> None:
    assert normalise_id_scope("0NE00000abc") == "0ne00000ABC"
    assert normalise_id_scope("short") == "short"
