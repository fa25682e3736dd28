"""Property tests of SAS parsing/verification and group key derivation (protocol.md §2).

Complements test_sas.py (documented vectors): here Hypothesis builds token-shaped text from
arbitrary field values and orders, keys of any shape, and registration IDs of the full grammar.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from opendps.attestation.sas import (
    SasToken,
    build_sas_token,
    parse_sas_token,
    verify_signature,
    verify_with_keys,
)
from opendps.attestation.symmetric import derive_device_key
from opendps.model.errors import UNAUTHORIZED, DpsError

registration_ids = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._:-]{0,60}[A-Za-z0-9-])?", fullmatch=True)
keys = st.binary(min_size=1, max_size=64).map(lambda raw: base64.b64encode(raw).decode())
field_values = st.text(max_size=60) | st.sampled_from(
    ["", "%", "%2", "%zz", "+", "=", "&", "AAAA", "-1", "1e3"]
)
field_names = st.sampled_from(["sr", "sig", "se", "skn", "SR", "x", ""])


@given(
    st.lists(st.tuples(field_names, field_values), max_size=6),
    st.sampled_from(["SharedAccessSignature ", "sharedaccesssignature ", "", "Bearer "]),
)
def test_token_shaped_text_yields_a_token_or_a_401_and_nothing_else(
    fields: list[tuple[str, str]], prefix: str
) -> None:
    text = prefix + "&".join(f"{name}={value}" for name, value in fields)
    try:
        token = parse_sas_token(text)
    except DpsError as err:
        assert err.error_code == UNAUTHORIZED
        return
    assert isinstance(token, SasToken)
    # Verifying a parsed token never raises, whatever the key looks like.
    assert verify_with_keys(token, ["", "not base64!", "AAAA"]) in (True, False)


@given(
    registration_ids,
    keys,
    st.integers(0, 2**40),
    st.permutations(["sr", "sig", "se", "skn"]),
    st.booleans(),
)
def test_field_order_does_not_matter(
    registration_id: str, key: str, expiry: int, order: list[str], encode: bool
) -> None:
    built = build_sas_token(
        f"0ne00000ABC/registrations/{registration_id}",
        key,
        expiry,
        key_name="registration",
        encode_sr=encode,
    )
    fields = dict(
        part.split("=", 1) for part in built.removeprefix("SharedAccessSignature ").split("&")
    )
    shuffled = parse_sas_token(
        "SharedAccessSignature " + "&".join(f"{name}={fields[name]}" for name in order)
    )
    assert shuffled == parse_sas_token(built)
    assert verify_signature(shuffled, key)


@given(registration_ids, keys, st.integers(0, 2**40))
def test_c_sdk_lower_case_hex_sr_verifies(registration_id: str, key: str, expiry: int) -> None:
    resource = f"0ne00000ABC/registrations/{registration_id}"
    lower = re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(resource, safe=""))
    token = parse_sas_token(build_sas_token(lower, key, expiry, encode_sr=False))
    assert token.resource == resource and verify_signature(token, key)


@given(registration_ids, keys, st.integers(0, 2**40), st.integers(0, 31), st.integers(0, 7))
def test_any_flipped_signature_bit_fails(
    registration_id: str, key: str, expiry: int, byte: int, bit: int
) -> None:
    token = parse_sas_token(build_sas_token(f"s/registrations/{registration_id}", key, expiry))
    flipped = bytearray(token.signature)
    flipped[byte] ^= 1 << bit
    forged = SasToken(token.sr_raw, token.resource, bytes(flipped), token.expiry, token.key_name)
    assert not verify_signature(forged, key)


@given(registration_ids, keys, st.integers(0, 2**40))
def test_a_token_signed_for_one_expiry_does_not_verify_for_another(
    registration_id: str, key: str, expiry: int
) -> None:
    token = parse_sas_token(build_sas_token(f"s/registrations/{registration_id}", key, expiry))
    moved = SasToken(token.sr_raw, token.resource, token.signature, expiry + 1, token.key_name)
    assert not verify_signature(moved, key)


@given(keys, registration_ids)
def test_derived_keys_are_deterministic_32_byte_base64(
    group_key: str, registration_id: str
) -> None:
    derived = derive_device_key(group_key, registration_id)
    assert derived == derive_device_key(group_key, registration_id)
    assert len(base64.b64decode(derived, validate=True)) == 32


@given(keys, registration_ids, registration_ids)
def test_derived_keys_differ_per_registration_id_including_case(
    group_key: str, a: str, b: str
) -> None:
    if a != b:
        assert derive_device_key(group_key, a) != derive_device_key(group_key, b)
    if a.lower() != a.upper():
        assert derive_device_key(group_key, a.lower()) != derive_device_key(group_key, a.upper())


@given(keys, keys, registration_ids, st.integers(0, 2**40))
def test_a_token_from_one_groups_derived_key_fails_with_another_groups(
    group_a: str, group_b: str, registration_id: str, expiry: int
) -> None:
    key_a, key_b = (
        derive_device_key(group_a, registration_id),
        derive_device_key(group_b, registration_id),
    )
    token = parse_sas_token(build_sas_token(f"s/registrations/{registration_id}", key_a, expiry))
    assert verify_with_keys(token, [key_b, key_a])
    assert verify_signature(token, key_b) == (key_a == key_b)
