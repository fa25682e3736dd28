"""The SAS token the simulator signs for a device (protocol.md §2)."""

from __future__ import annotations

import pytest

from opendps.attestation.sas import check_expiry, parse_sas_token, verify_with_keys
from opendps.attestation.symmetric import derive_device_key
from opendps.simulator.credentials import (
    DEVICE_TOKEN_TTL_SECONDS,
    device_sas_token,
    group_device_key,
)

GROUP_KEY = "Z3JvdXAta2V5LWdyb3VwLWtleS1ncm91cC1rZXktZ3Jv"
NOW = 1_800_000_000


def test_a_group_device_token_names_the_device_and_verifies_with_the_derived_key() -> None:
    key = group_device_key(GROUP_KEY, "sensor-7")
    token = parse_sas_token(device_sas_token("0ne0000000A", "sensor-7", key, now=NOW))
    assert token.resource == "0ne0000000A/registrations/sensor-7"
    assert token.key_name == "registration"
    assert verify_with_keys(token, [derive_device_key(GROUP_KEY, "sensor-7")])
    assert not verify_with_keys(token, [GROUP_KEY])


def test_the_token_lives_an_hour() -> None:
    token = parse_sas_token(device_sas_token("0ne0000000A", "d", GROUP_KEY, now=NOW))
    assert token.expiry == NOW + DEVICE_TOKEN_TTL_SECONDS
    check_expiry(token, NOW + DEVICE_TOKEN_TTL_SECONDS - 1, skew_seconds=0)


def test_a_key_that_is_not_base64_is_refused() -> None:
    with pytest.raises(ValueError):
        device_sas_token("0ne0000000A", "d", "not base64 at all!", now=NOW)
