"""TPM attestation core (protocol.md §6): EK/SRK parsing, KDFa, the `authenticationKey` blob.

The blob is checked by opening it the way a TPM does (ActivateCredential, then Import with every
integrity check) with the private halves of software keys. The swtpm integration test proves the
same blob on a real TPM.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.attestation.soft_tpm import (
    BLOB_PART_SIZES,
    EK_ATTRIBUTES,
    HMAC_KEY_ATTRIBUTES,
    SRK_ATTRIBUTES,
    IntegrityError,
    Template,
    activate_credential,
    oaep_decrypt,
    open_blob,
    software_ek,
    software_key,
    software_srk,
    split_blob,
    t2b,
    template_for,
    u16,
)

from opendps.attestation.tpm import (
    HMAC_KEY_BYTES,
    build_authentication_key,
    default_registration_id,
    kdfa,
    new_hmac_key,
    parse_tpm_public,
    parse_tpm_public_base64,
    same_key,
)
from opendps.model.errors import INVALID_BODY, DpsError

# Captured once from swtpm 0.7.1 with tpm2-tools 5.4: `tpm2_createek -G rsa -u ek.pub` and
# `tpm2_createprimary -C o -g sha256 -G rsa2048:aes128cfb -a 'fixedtpm|fixedparent|
# sensitivedataorigin|userwithauth|noda|restricted|decrypt'` + `tpm2_readpublic -o srk.pub`.
SWTPM_EK = (
    "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEApwW/GG082tti1x"
    "wzRWmqKi0fvkiqo7ezHljwDeTST3yhmy5HfmHjZM04o8FEZkg/Yb2unjZIHKFVtcBzGOLtCESD1fReGbI0f0w5Sbo/zneb"
    "T/huQB7Crjw45phthaFaydLS7n/t55Ja365ElJ6ju4Y8WnDUnnbrFcdvIh4w46UTOEFgOxZdWGnWtL2aV8asFI20qi8v72"
    "yvfivPBUxvtf42+ZFtaggFOsHENf3GfzcaBgvgsao/r9GnV57+aaR1ocxG1kqTQek48cwQAfteRMx3/HAUKk5T8gb9uPDk"
    "uy3BA+x6W1R20f1N8a5MPgZdC63DEL8K1/+cJz7riGmeTw=="
)
SWTPM_SRK = (
    "ARoAAQALAAMEcgAAAAYAgABDABAIAAAAAAABAMIV4nreA91F9XmFcnH6y4lSdF/Mf9GiPivuCma5GPwluzAtpC7LjcJUZ4"
    "r+hEFR/YdMDxkyLlDh4MzLsAbxhYxdRLWmQGRwnctgToSTxij0UTHnzcHvQdm42kZRgpdu1ROd2bdX6yGghmAtzfV9KbT+"
    "HVIVWqf9oqHw6W+syayw9S6sS7wDgYwbHQmbHOvE3fA4VGBsv1ALvqHL9y1aWwBedtOKSqeUzjcjDsZ2Zu9jMxEL6TklsU"
    "Vom+UPZjxnKGAA8wbvNZEA3SrsvLjvo5X/iLbWWfn2IOifAcTk3uA2hebOsIYt0aUUF2bvsqmo2NdjJDfEjtM+iToO+2HO"
    "bpE="
)
# The Names the TPM itself reported (`tpm2_readpublic` "name:"), and the registration ID computed
# with coreutils: `sha256sum ek.pub | xxd -r -p | base32 | tr A-Z a-z | tr -d =`.
SWTPM_EK_NAME = "000b4ddd7a824deeb984099c2fa47182dd0b956639dce2e6c0c021f911f92d90b6e6"
SWTPM_SRK_NAME = "000bf976abd20cf7b369250476ed6c96c970e782fc6f1b1a84ec2143c56a3402455c"
SWTPM_EK_REGISTRATION_ID = "n3de3wkz52no525rfc5s4wdnzsld2vroqkj5lyp7gpzbbfsqvhgq"


def expect_invalid(data: bytes, *reason_words: str) -> DpsError:
    with pytest.raises(DpsError) as caught:
        parse_tpm_public(data, "tpm.endorsementKey")
    assert caught.value.error_code == INVALID_BODY
    assert caught.value.message.startswith("tpm.endorsementKey ")
    for word in reason_words:
        assert word in caught.value.message
    return caught.value


# --- KDFa -------------------------------------------------------------------------------------

SEED = bytes(range(32))
ZERO_NAME = bytes.fromhex("000b") + bytes(32)


def test_kdfa_storage_vector_from_the_contract() -> None:
    assert kdfa(SEED, "STORAGE", ZERO_NAME, b"", 128).hex() == "4535165c7f0dc2bd1abef241c5893af0"


def test_kdfa_integrity_vector_from_the_contract() -> None:
    expected = "bacf689f634ece301e1f1b15b072d9c87db6a69585db42b1a0cb8f73ebe2692e"
    assert kdfa(SEED, "INTEGRITY", b"", b"", 256).hex() == expected


def test_kdfa_longer_than_one_digest_concatenates_counter_blocks() -> None:
    fixed = b"STORAGE\x00" + ZERO_NAME + struct.pack(">I", 384)
    blocks = [hmac.new(SEED, struct.pack(">I", i) + fixed, hashlib.sha256).digest() for i in (1, 2)]
    assert kdfa(SEED, "STORAGE", ZERO_NAME, b"", 384) == (blocks[0] + blocks[1])[:48]


@pytest.mark.parametrize("bits", [0, -8, 12])
def test_kdfa_refuses_bit_counts_that_are_not_whole_bytes(bits: int) -> None:
    with pytest.raises(ValueError):
        kdfa(SEED, "STORAGE", b"", b"", bits)


# --- Parsing real swtpm keys -------------------------------------------------------------------


def test_swtpm_endorsement_key_parses_with_the_tpms_own_name() -> None:
    raw = base64.b64decode(SWTPM_EK)
    ek = parse_tpm_public_base64(SWTPM_EK, "tpm.endorsementKey")
    assert len(ek.raw) == 316 and ek.raw == raw and ek.public_area == raw[2:]
    assert ek.attributes == EK_ATTRIBUTES
    assert (ek.key_bits, ek.symmetric_bits, ek.exponent) == (2048, 128, 65537)
    assert ek.name.hex() == SWTPM_EK_NAME
    assert ek.modulus.to_bytes(256, "big") == raw[-256:]
    assert ek.rsa_public_key().public_numbers() == rsa.RSAPublicNumbers(65537, ek.modulus)


def test_swtpm_storage_root_key_parses_with_the_tpms_own_name() -> None:
    srk = parse_tpm_public_base64(SWTPM_SRK, "tpm.storageRootKey")
    assert len(srk.raw) == 284
    assert srk.attributes == SRK_ATTRIBUTES
    assert (srk.key_bits, srk.symmetric_bits, srk.exponent) == (2048, 128, 65537)
    assert srk.name.hex() == SWTPM_SRK_NAME


def test_parsed_key_round_trips_to_the_same_bytes() -> None:
    key = software_key("ek")
    data = template_for(key).tpm2b_public()
    parsed = parse_tpm_public(data, "ek")
    rebuilt = Template(modulus=parsed.modulus.to_bytes(256, "big"), attributes=parsed.attributes)
    assert rebuilt.tpm2b_public() == data
    assert parsed.rsa_public_key().public_numbers() == key.public_key().public_numbers()


def test_same_key_ignores_formatting_but_not_the_rsa_numbers() -> None:
    key = software_key("ek")
    as_tpm_writes_it = parse_tpm_public(template_for(key).tpm2b_public(), "a")
    spelled_out = template_for(key, exponent=65537, attributes=SRK_ATTRIBUTES, auth_policy=b"")
    other_form = parse_tpm_public(spelled_out.tpm2b_public(), "b")
    assert as_tpm_writes_it.raw != other_form.raw
    assert same_key(as_tpm_writes_it, other_form)
    assert not same_key(as_tpm_writes_it, software_srk())
    odd_exponent = parse_tpm_public(template_for(key, exponent=3).tpm2b_public(), "c")
    assert not same_key(as_tpm_writes_it, odd_exponent)


def test_default_registration_id_of_the_swtpm_ek() -> None:
    assert default_registration_id(base64.b64decode(SWTPM_EK)) == SWTPM_EK_REGISTRATION_ID


@given(st.binary(max_size=400))
def test_default_registration_id_is_52_lowercase_base32_characters(raw: bytes) -> None:
    assert re.fullmatch(r"[a-z2-7]{52}", default_registration_id(raw))


# --- Every rejection reason ---------------------------------------------------------------------


def valid_ek_bytes() -> bytes:
    return template_for(software_key("ek")).tpm2b_public()


def test_every_truncation_is_refused() -> None:
    data = valid_ek_bytes()
    for length in range(len(data)):
        expect_invalid(data[:length])


def test_inner_truncation_with_a_consistent_size_field_names_the_field() -> None:
    area = valid_ek_bytes()[2:]
    expect_invalid(t2b(area[:-10]), "truncated", "modulus")
    expect_invalid(t2b(area[:5]), "truncated", "objectAttributes")


def test_size_field_disagreeing_with_the_data_is_refused() -> None:
    data = valid_ek_bytes()
    expect_invalid(u16(len(data) - 1) + data[2:], "says its TPMT_PUBLIC is")
    expect_invalid(u16(len(data) - 3) + data[2:], "says its TPMT_PUBLIC is")
    expect_invalid(data + b"\x00", "but 315 follow")


def test_trailing_bytes_inside_the_tpm2b_are_refused() -> None:
    expect_invalid(t2b(valid_ek_bytes()[2:] + b"\x00\x00"), "2 trailing bytes")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"key_type": 0x0023}, "key type 0x0023"),
        ({"name_alg": 0x0004}, "nameAlg 0x0004"),
        ({"attributes": EK_ATTRIBUTES & ~0x00010000}, "restricted"),
        ({"attributes": EK_ATTRIBUTES & ~0x00020000}, "restricted|decrypt"),
        ({"symmetric": u16(0x0010)}, "no symmetric algorithm"),
        ({"symmetric": struct.pack(">HHH", 0x0006, 256, 0x0043)}, "0x0006/256"),
        ({"symmetric": struct.pack(">HHH", 0x0006, 128, 0x0042)}, "mode 0x0042"),
        ({"symmetric": struct.pack(">HHH", 0x0026, 128, 0x0043)}, "0x0026/128"),
        ({"scheme": struct.pack(">HH", 0x0017, 0x000B)}, "scheme 0x0017"),
        ({"key_bits": 3072}, "RSA-3072"),
        ({"exponent": 4}, "exponent 4"),
        ({"exponent": 1}, "exponent 1"),
    ],
)
def test_unsupported_key_is_refused_with_its_reason(fields: dict[str, object], reason: str) -> None:
    expect_invalid(template_for(software_key("ek"), **fields).tpm2b_public(), reason)


def test_rsa_1024_key_is_refused() -> None:
    modulus = software_key("ek").public_key().public_numbers().n.to_bytes(256, "big")[:128]
    expect_invalid(Template(modulus=modulus, key_bits=1024).tpm2b_public(), "RSA-1024")


@pytest.mark.parametrize("length", [0, 255, 257, 512])
def test_modulus_of_the_wrong_length_is_refused(length: int) -> None:
    expect_invalid(Template(modulus=b"\xff" * length).tpm2b_public(), f"{length}-byte modulus")


@pytest.mark.parametrize(
    "modulus", [b"\x00" + b"\xff" * 255, b"\xff" * 255 + b"\xfe"], ids=["short", "even"]
)
def test_modulus_that_is_no_rsa_2048_modulus_is_refused(modulus: bytes) -> None:
    expect_invalid(Template(modulus=modulus).tpm2b_public(), "odd 2048-bit")


@pytest.mark.parametrize("text", [None, 42, b"AToAAQ==", ["AToAAQ=="]])
def test_base64_field_that_is_not_a_string_is_refused(text: object) -> None:
    with pytest.raises(DpsError) as caught:
        parse_tpm_public_base64(text, "tpm.storageRootKey")
    assert caught.value.error_code == INVALID_BODY
    assert caught.value.message == "tpm.storageRootKey must be a base64 string"


@pytest.mark.parametrize("text", ["not base64!", "AToAAQ=", "ÄToAAQ==", "AToA AQ=="])
def test_text_that_is_not_base64_is_refused(text: str) -> None:
    with pytest.raises(DpsError) as caught:
        parse_tpm_public_base64(text, "tpm.storageRootKey")
    assert caught.value.error_code == INVALID_BODY
    assert caught.value.message == "tpm.storageRootKey is not valid base64"


def check_parse_outcome(data: bytes) -> None:
    """Parsing either refuses with INVALID_BODY or yields a key usable for encryption."""
    try:
        key = parse_tpm_public(data, "tpm.endorsementKey")
    except DpsError as error:
        assert error.error_code == INVALID_BODY
        return
    assert same_key(key, key)
    key.rsa_public_key()


@settings(deadline=None)  # the first example may generate the RSA test key
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_ever_raise_invalid_body(data: bytes) -> None:
    check_parse_outcome(data)


@settings(deadline=None)
@given(st.data())
def test_mutations_of_a_valid_key_only_ever_raise_invalid_body(data: st.DataObject) -> None:
    original = bytearray(valid_ek_bytes())
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        position = data.draw(st.integers(0, len(original) - 1), label="position")
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="action")
        byte = data.draw(st.integers(0, 255), label="byte")
        if action == "replace":
            original[position] = byte
        elif action == "insert":
            original.insert(position, byte)
        else:
            del original[position]
    check_parse_outcome(bytes(original))


# --- The authenticationKey blob, opened as a TPM would --------------------------------------------


@pytest.mark.parametrize("key_size", [HMAC_KEY_BYTES, 64])
def test_blob_opens_with_the_ek_and_srk_private_keys_and_yields_the_hmac_key(
    key_size: int,
) -> None:
    srk = software_srk()
    hmac_key = secrets.token_bytes(key_size)
    blob = build_authentication_key(software_ek(), srk, hmac_key)
    assert open_blob(blob, srk) == hmac_key


def test_blob_has_the_six_structures_of_the_contract() -> None:
    blob = build_authentication_key(software_ek(), software_srk(), new_hmac_key())
    assert len(blob) == 766
    parts = split_blob(blob)
    assert tuple(len(part) for part in parts) == BLOB_PART_SIZES
    id_object, secret, duplicate, sym_seed, object_public, data = parts
    assert id_object[2:4] == u16(32)  # integrityHMAC is a SHA-256 digest
    assert duplicate[2:4] == u16(32)  # so is outerHMAC
    assert secret[:2] == sym_seed[:2] == u16(256)
    public_area = object_public[2:]
    assert public_area[:8] == struct.pack(">HHI", 0x0008, 0x000B, HMAC_KEY_ATTRIBUTES)
    assert data == b"\x00\x00"


def test_blob_bound_to_another_srk_fails_activation() -> None:
    other = parse_tpm_public_base64(SWTPM_SRK, "srk")
    blob = build_authentication_key(software_ek(), other, new_hmac_key())
    with pytest.raises(IntegrityError, match="credential integrity"):
        open_blob(blob, software_srk())


@pytest.mark.parametrize(
    ("part", "offset", "failure"),
    [(0, 40, "credential integrity"), (2, 100, "outer integrity"), (4, 20, "outer integrity")],
)
def test_tampered_blob_fails_the_tpm_integrity_checks(part: int, offset: int, failure: str) -> None:
    srk = software_srk()
    parts = split_blob(build_authentication_key(software_ek(), srk, new_hmac_key()))
    tampered = bytearray(parts[part])
    tampered[offset] ^= 0x01
    parts[part] = bytes(tampered)
    with pytest.raises(IntegrityError, match=failure):
        open_blob(b"".join(parts), srk)


def counting_random() -> tuple[Callable[[int], bytes], list[int]]:
    """A reproducible `random_bytes` that also records what was asked of it."""
    requests: list[int] = []

    def random_bytes(count: int) -> bytes:
        requests.append(count)
        return hashlib.sha256(struct.pack(">I", len(requests))).digest()[:count]

    return random_bytes, requests


def test_blob_is_determined_by_random_bytes_except_for_oaep() -> None:
    ek, srk, hmac_key = software_ek(), software_srk(), new_hmac_key()
    first_random, requests = counting_random()
    first = split_blob(build_authentication_key(ek, srk, hmac_key, random_bytes=first_random))
    second_random, _ = counting_random()
    second = split_blob(build_authentication_key(ek, srk, hmac_key, random_bytes=second_random))
    assert requests == [16, 32, 32, 32]  # innerKey, credential seed, obfuscation, duplication seed
    for index in (0, 2, 4, 5):
        assert first[index] == second[index]
    # RSA-OAEP is randomised, but both encrypt the same seeds.
    encrypted_seeds = ((1, "ek", b"IDENTITY\x00", 2), (3, "srk", b"DUPLICATE\x00", 4))
    for index, key, label, request in encrypted_seeds:
        assert first[index] != second[index]
        seeds = {oaep_decrypt(software_key(key), part[index], label) for part in (first, second)}
        assert seeds == {hashlib.sha256(struct.pack(">I", request)).digest()}


def test_inner_key_comes_from_random_bytes() -> None:
    random_bytes, _ = counting_random()
    srk = software_srk()
    parts = split_blob(
        build_authentication_key(software_ek(), srk, new_hmac_key(), random_bytes=random_bytes)
    )
    inner_key = activate_credential(software_key("ek"), srk.name, parts[0], parts[1])
    assert inner_key == hashlib.sha256(struct.pack(">I", 1)).digest()[:16]


@pytest.mark.parametrize("size", [0, 129])
def test_hmac_key_of_impossible_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError):
        build_authentication_key(software_ek(), software_srk(), bytes(size))


def test_new_hmac_keys_are_32_fresh_bytes() -> None:
    first, second = new_hmac_key(), new_hmac_key()
    assert len(first) == len(second) == HMAC_KEY_BYTES == 32
    assert first != second
