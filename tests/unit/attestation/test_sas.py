"""SAS tokens against the vectors of protocol.md §2 (computed independently there)."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendps.attestation.sas import (
    build_sas_token,
    check_expiry,
    compute_signature,
    parse_sas_token,
    resource_matches,
    verify_signature,
    verify_with_keys,
)
from opendps.attestation.symmetric import derive_device_key
from opendps.model.errors import UNAUTHORIZED, DpsError

GROUP_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
DEVICE_KEY = "Qo/tl0OMJVczFo9NZmMsiSRof5GTI3Bk1I8Pwy2UV2c="
PYTHON_STYLE = (
    "SharedAccessSignature sr=0ne00000ABC%2Fregistrations%2Fsensor-001"
    "&sig=77mh19xAX%2FJZHgh4Zu5uBDACo8cMkQTMAkLfWm5yQL8%3D&se=1767225600&skn=registration"
)
NODE_STYLE = (
    "SharedAccessSignature sr=0ne00000ABC/registrations/sensor-001"
    "&sig=UWM29gbvz7ve7Qr6BkEvocWP9MMJIyRY0gEIbJiVugs%3D&skn=registration&se=1767225600"
)
SERVICE_KEY = "ERERERERERERERERERERERERERERERERERERERERERE="
SERVICE_TOKEN = (
    "SharedAccessSignature sr=mydps.example.net&sig=ZnzRNI2GpfWrO1Z8STf1SnPLZ%2Feo6SWRoUGYl312aqg%3D"
    "&se=1767225600&skn=provisioningserviceowner"
)


def test_group_key_derivation_matches_the_documented_vector() -> None:
    assert derive_device_key(GROUP_KEY, "sensor-001") == DEVICE_KEY


@pytest.mark.parametrize("token", [PYTHON_STYLE, NODE_STYLE])
def test_device_tokens_verify_whether_sr_is_encoded_or_raw(token: str) -> None:
    parsed = parse_sas_token(token)
    assert parsed.resource == "0ne00000ABC/registrations/sensor-001"
    assert parsed.expiry == 1767225600 and parsed.key_name == "registration"
    assert verify_signature(parsed, DEVICE_KEY)


def test_a_token_signed_over_lower_case_hex_sr_verifies() -> None:
    token = build_sas_token("0ne00000ABC/registrations/sensor-001", DEVICE_KEY, 1767225600)
    lower = token.replace("%2F", "%2f", 2)
    # The C SDK signs what it sends: re-sign over the lower-case form.
    sr = "0ne00000ABC%2fregistrations%2fsensor-001"
    sig = quote(base64.b64encode(compute_signature(DEVICE_KEY, sr, 1767225600)).decode(), safe="")
    c_style = f"SharedAccessSignature sr={sr}&sig={sig}&se=1767225600&skn=registration"
    assert verify_signature(parse_sas_token(c_style), DEVICE_KEY)
    assert parse_sas_token(lower).resource == "0ne00000ABC/registrations/sensor-001"


def test_service_token_verifies_with_the_policy_key() -> None:
    parsed = parse_sas_token(SERVICE_TOKEN)
    assert parsed.key_name == "provisioningserviceowner" and parsed.resource == "mydps.example.net"
    assert verify_with_keys(parsed, ["A" * 43 + "=", SERVICE_KEY])


def test_a_wrong_key_does_not_verify() -> None:
    assert not verify_signature(parse_sas_token(PYTHON_STYLE), GROUP_KEY)
    assert not verify_signature(parse_sas_token(PYTHON_STYLE), "not base64!")


def test_expired_tokens_are_rejected_with_401002_after_the_skew() -> None:
    token = parse_sas_token(PYTHON_STYLE)
    check_expiry(token, 1767225600 + 299, skew_seconds=300)
    with pytest.raises(DpsError) as err:
        check_expiry(token, 1767225600 + 300, skew_seconds=300)
    assert err.value.error_code == UNAUTHORIZED


@pytest.mark.parametrize(
    "token",
    [
        "",
        "Bearer abc",
        "SharedAccessSignature sr=a&sig=b",
        "SharedAccessSignature sr=a&sig=%%%&se=1",
        "SharedAccessSignature sr=a&sig=AAAA&se=soon",
        "SharedAccessSignature sr=a&sig=AAAA&se=1&sr=b",
        "SharedAccessSignature sr=a&sig=AAAA&se=1&extra=1",
        "SharedAccessSignature " + "x" * 5000,
    ],
)
def test_malformed_tokens_are_rejected_with_401002(token: str) -> None:
    with pytest.raises(DpsError) as err:
        parse_sas_token(token)
    assert err.value.error_code == UNAUTHORIZED


@given(st.text(max_size=300))
def test_any_header_text_parses_or_raises_only_a_dps_error(text: str) -> None:
    for candidate in (text, "SharedAccessSignature " + text):
        try:
            parse_sas_token(candidate)
        except DpsError as err:
            assert err.error_code == UNAUTHORIZED


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True), st.integers(0, 2**40))
def test_tokens_we_build_in_either_style_verify(registration_id: str, expiry: int) -> None:
    resource = f"0ne00000ABC/registrations/{registration_id}"
    key = derive_device_key(GROUP_KEY, registration_id)
    for encode in (True, False):
        parsed = parse_sas_token(
            build_sas_token(resource, key, expiry, key_name="registration", encode_sr=encode)
        )
        assert parsed.resource == resource and verify_signature(parsed, key)


def test_resource_match_is_a_case_insensitive_segment_prefix() -> None:
    assert resource_matches("MyDps.Example.NET", "mydps.example.net")
    assert resource_matches("a/b", "a/b/c")
    assert not resource_matches("a/b", "a/bc")
    assert not resource_matches("a/b/c", "a/b")
