"""The TPM device's pure pieces (no TPM): blob splitting (protocol.md §6.3), the TCTI string,
the SAS token a TPM signs (§6.2) and reading the server's challenge."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import sys

import pytest

from opendps.attestation.sas import parse_sas_token, verify_with_keys
from opendps.simulator.tpm import challenge_key, tpm_sas_token
from opendps.simulator.tpm_device import (
    AuthenticationKeyParts,
    TpmDevice,
    TpmError,
    split_authentication_key,
    tcti_for,
)

HMAC_KEY = bytes(range(32))
NOW = 1_800_000_000


def t2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


PARTS = [t2b(b"\x00\x20" + b"i" * 32 + b"e" * 20), t2b(b"s" * 256), t2b(b"p" * 142)]
PARTS += [t2b(b"d" * 256), t2b(b"k" * 48), t2b(b"")]
BLOB = b"".join(PARTS)


def test_a_blob_splits_into_its_six_parts_with_their_sizes() -> None:
    assert split_authentication_key(BLOB) == AuthenticationKeyParts(*PARTS)


def test_the_last_part_may_be_empty_but_not_missing() -> None:
    with pytest.raises(ValueError, match="ends before its uri_data part"):
        split_authentication_key(BLOB[:-2])


def test_a_part_cut_short_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate part is cut short"):
        split_authentication_key(b"".join(PARTS[:2]) + PARTS[2][:50])


def test_bytes_after_the_six_parts_are_refused() -> None:
    with pytest.raises(ValueError, match="3 bytes after its six parts"):
        split_authentication_key(BLOB + b"xyz")


def test_the_tcti_names_the_simulator_protocol() -> None:
    assert tcti_for("127.0.0.1", 2321) == "swtpm:host=127.0.0.1,port=2321"
    assert tcti_for("tpm.local", 2331, "mssim") == "mssim:host=tpm.local,port=2331"
    with pytest.raises(ValueError, match="swtpm, mssim"):
        tcti_for("127.0.0.1", 2321, "tbs")


class HmacSigner:
    """Stands in for the TPM: the same HMAC-SHA256 the imported key computes."""

    def __init__(self) -> None:
        self.signed: list[bytes] = []

    async def sign(self, data: bytes) -> bytes:
        self.signed.append(data)
        return hmac.new(HMAC_KEY, data, hashlib.sha256).digest()


async def test_the_tpm_token_signs_the_encoded_resource_and_verifies_with_the_key() -> None:
    signer = HmacSigner()
    text = await tpm_sas_token(signer, "0ne00000ABC", "dev1", now=NOW)
    assert signer.signed == [f"0ne00000ABC%2Fregistrations%2Fdev1\n{NOW + 3600}".encode()]
    token = parse_sas_token(text)
    assert token.sr_raw == "0ne00000ABC%2Fregistrations%2Fdev1"
    assert (token.resource, token.key_name) == ("0ne00000ABC/registrations/dev1", "registration")
    assert verify_with_keys(token, [base64.b64encode(HMAC_KEY).decode()])


def test_a_401_with_a_key_is_a_challenge_and_anything_else_is_an_answer() -> None:
    encoded = base64.b64encode(BLOB).decode()
    challenge = {"authenticationKey": encoded, "keyName": "registration"}
    assert challenge_key(401, challenge) == BLOB
    assert challenge_key(401, {"errorCode": 401002, "message": "Unauthorized"}) is None
    assert challenge_key(404, {"errorCode": 404201}) is None
    assert challenge_key(200, {"status": "assigned", "authenticationKey": encoded}) is None
    with pytest.raises(TpmError, match="not base64"):
        challenge_key(401, {"authenticationKey": "%%%"})


def test_without_tpm2_pytss_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tpm2_pytss", None)  # makes `import tpm2_pytss` fail
    with pytest.raises(TpmError, match=r"pip install 'opendps\[tpm\]'"):
        TpmDevice("swtpm:host=127.0.0.1,port=2321")
