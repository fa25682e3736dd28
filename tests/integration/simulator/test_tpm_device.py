"""The simulator's TPM (tpm2-pytss) against a real software TPM (swtpm on loopback).

The service side of the key exchange is `opendps.attestation.tpm.build_authentication_key`: a
blob it builds for a known key must, once unwrapped by the TPM, make TPM2_HMAC agree with
Python's HMAC over the same data.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.tpmsim.swtpm import Swtpm, start_swtpm

from opendps.attestation.tpm import (
    build_authentication_key,
    default_registration_id,
    parse_tpm_public,
)
from opendps.simulator.tpm_device import TpmDevice, TpmError, TpmPublicKeys

pytest.importorskip("tpm2_pytss", reason="needs the tpm extra: pip install 'opendps[tpm]'")

HMAC_KEY = bytes(range(32))
SAS_TEXT = b"0ne00000ABC%2Fregistrations%2Fdev1\n1767225600"


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    with start_swtpm(tmp_path / "tpm") as running:
        yield running


def blob_for(keys: TpmPublicKeys, hmac_key: bytes) -> bytes:
    return build_authentication_key(
        parse_tpm_public(keys.endorsement_key, "EK"),
        parse_tpm_public(keys.storage_root_key, "SRK"),
        hmac_key,
    )


def python_hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def test_the_ek_and_srk_are_created_once_and_reused(tmp_path: Path) -> None:
    with start_swtpm(tmp_path / "tpm") as first_run, TpmDevice(first_run.tcti) as device:
        created = device.ensure_keys()
        assert device.ensure_keys() == created
    # A new process on the same TPM state finds both keys persisted at their handles.
    with start_swtpm(tmp_path / "tpm") as second_run, TpmDevice(second_run.tcti) as device:
        assert device.ensure_keys() == created
    ek = parse_tpm_public(created.endorsement_key, "EK")
    srk = parse_tpm_public(created.storage_root_key, "SRK")
    # The sizes and attributes the SDK templates give (protocol.md §6.4, observed on swtpm).
    assert (len(created.endorsement_key), ek.attributes, ek.key_bits) == (316, 0x000300B2, 2048)
    assert (len(created.storage_root_key), srk.attributes, srk.key_bits) == (284, 0x00030472, 2048)
    assert len(default_registration_id(created.endorsement_key)) == 52


def test_an_imported_key_signs_like_hmac_sha256_with_that_key(swtpm: Swtpm) -> None:
    with TpmDevice(swtpm.tcti) as device:
        device.activate_and_import(blob_for(device.ensure_keys(), HMAC_KEY))
        assert device.sign(SAS_TEXT) == python_hmac(HMAC_KEY, SAS_TEXT)
        # Longer than one TPM2_HMAC buffer: signed through an HMAC sequence.
        long_text = bytes(range(256)) * 9
        assert device.sign(long_text) == python_hmac(HMAC_KEY, long_text)


def test_a_second_key_replaces_the_first_at_the_device_handle(swtpm: Swtpm) -> None:
    hub_key = bytes(32 * [0x5A])
    with TpmDevice(swtpm.tcti) as device:
        keys = device.ensure_keys()
        device.activate_and_import(blob_for(keys, HMAC_KEY))
        device.activate_and_import(blob_for(keys, hub_key))
        assert device.sign(SAS_TEXT) == python_hmac(hub_key, SAS_TEXT)
    with TpmDevice(swtpm.tcti) as reopened:  # persisted, not only loaded
        assert reopened.sign(SAS_TEXT) == python_hmac(hub_key, SAS_TEXT)


def test_a_blob_made_for_another_tpm_is_refused(swtpm: Swtpm, tmp_path: Path) -> None:
    with start_swtpm(tmp_path / "other") as other, TpmDevice(other.tcti) as other_device:
        foreign = blob_for(other_device.ensure_keys(), HMAC_KEY)
    with TpmDevice(swtpm.tcti) as device:
        device.ensure_keys()
        with pytest.raises(TpmError, match="unwrapping the authenticationKey"):
            device.activate_and_import(foreign)


def test_a_truncated_blob_is_refused_before_the_tpm_sees_it(swtpm: Swtpm) -> None:
    with TpmDevice(swtpm.tcti) as device:
        blob = blob_for(device.ensure_keys(), HMAC_KEY)
        with pytest.raises(TpmError, match="uri_data"):
            device.activate_and_import(blob[:-2])


def test_an_unreachable_tpm_is_a_tpm_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TpmError, match="cannot open the TPM"):
        TpmDevice(f"swtpm:host=127.0.0.1,port={port}")
