"""The `authenticationKey` blob on a real software TPM (swtpm + tpm2-tools), opened as a device does.

This is the device side of protocol.md §6.3 with the same TPM commands the C and Node SDKs send:
a PolicySecret(endorsement) session, TPM2_ActivateCredential (activate = SRK, key = EK) to get
innerKey, TPM2_Import under the SRK with innerKey as the inner wrapper key, TPM2_Load, then
TPM2_HMAC over a SAS string, which must equal HMAC-SHA256 with the key the service chose.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.tpmsim.swtpm import start_swtpm
from tests.unit.attestation.soft_tpm import split_blob

from opendps.attestation.tpm import (
    TpmPublicKey,
    build_authentication_key,
    new_hmac_key,
    parse_tpm_public,
    tpm_name,
)

TOOLS = (
    "tpm2_createek",
    "tpm2_createprimary",
    "tpm2_evictcontrol",
    "tpm2_flushcontext",
    "tpm2_readpublic",
    "tpm2_startauthsession",
    "tpm2_policysecret",
    "tpm2_activatecredential",
    "tpm2_import",
    "tpm2_load",
    "tpm2_hmac",
)
EK_HANDLE = "0x81010001"
SRK_HANDLE = "0x81000001"
# The SDKs' SRK template (protocol.md §6.1).
SRK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt"
SAS_STRING = b"0ne00000ABC%2Fregistrations%2Fdev1\n1767225600"
# Only a guard against a hung tool; nothing asserts on time.
TOOL_TIMEOUT_SECONDS = 120
# tpm2_activatecredential reads the tpm2_makecredential file: magic, version, then #1 and #2.
CREDENTIAL_FILE_HEADER = struct.pack(">II", 0xBADCC0DE, 1)


class TpmCommandFailed(Exception):
    pass


@dataclass(frozen=True)
class TpmTools:
    """tpm2-tools pointed at one swtpm."""

    tcti: str

    def run(self, *args: str | Path, stdin: bytes | None = None) -> str:
        result = subprocess.run(
            [str(arg) for arg in args],
            env={**os.environ, "TPM2TOOLS_TCTI": self.tcti},
            input=stdin,
            capture_output=True,
            timeout=TOOL_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            raise TpmCommandFailed(f"{args[0]}: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode(errors="replace")

    @contextmanager
    def endorsement_policy_session(self, work: Path) -> Iterator[Path]:
        """A policy session satisfying the EK's PolicySecret(TPM_RH_ENDORSEMENT) policy."""
        session = work / "session.ctx"
        self.run("tpm2_startauthsession", "--policy-session", "-S", session)
        try:
            self.run("tpm2_policysecret", "-S", session, "-c", "e")
            yield session
        finally:
            self.run("tpm2_flushcontext", session)


@dataclass(frozen=True)
class Tpm:
    """A swtpm with the EK and SRK persisted at the handles the SDKs use."""

    tools: TpmTools
    ek: TpmPublicKey
    srk: TpmPublicKey

    def run(self, *args: str | Path, stdin: bytes | None = None) -> str:
        return self.tools.run(*args, stdin=stdin)


def require_tpm2_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"tpm2-tools missing ({', '.join(missing)}): install Debian `tpm2-tools`")


def name_in(output: str) -> str:
    """The `name:` line that tpm2_readpublic and tpm2_load print."""
    for line in output.splitlines():
        if line.startswith("name:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no name in {output!r}")


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tpm]:
    require_tpm2_tools()
    work = tmp_path_factory.mktemp("tpm")
    with start_swtpm(work / "state") as swtpm:
        tools = TpmTools(swtpm.tcti)
        tools.run("tpm2_createek", "-G", "rsa", "-u", work / "ek.pub", "-c", EK_HANDLE)
        srk_context = work / "srk.ctx"
        tools.run(
            "tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "rsa2048:aes128cfb",
            "-a", SRK_ATTRIBUTES, "-c", srk_context,
        )  # fmt: skip
        tools.run("tpm2_evictcontrol", "-C", "o", "-c", srk_context, SRK_HANDLE)
        # swtpm has no resource manager: free the transient slot the primary key held.
        tools.run("tpm2_flushcontext", "-t")
        keys = {}
        for label, handle in (("ek", EK_HANDLE), ("srk", SRK_HANDLE)):
            output = tools.run("tpm2_readpublic", "-c", handle, "-o", work / f"{label}.tpm2b")
            keys[label] = parse_tpm_public((work / f"{label}.tpm2b").read_bytes(), label)
            assert keys[label].name.hex() == name_in(output)
        yield Tpm(tools, ek=keys["ek"], srk=keys["srk"])


def activate_credential(tpm: Tpm, work: Path, id_object: bytes, secret: bytes) -> bytes:
    (work / "credential").write_bytes(CREDENTIAL_FILE_HEADER + id_object + secret)
    with tpm.tools.endorsement_policy_session(work) as session:
        tpm.run(
            "tpm2_activatecredential", "-c", SRK_HANDLE, "-C", EK_HANDLE,
            "-i", work / "credential", "-o", work / "inner.key", "-P", f"session:{session}",
        )  # fmt: skip
    return (work / "inner.key").read_bytes()


def test_swtpm_imports_the_hmac_key_and_signs_sas_strings_with_it(tpm: Tpm, tmp_path: Path) -> None:
    hmac_key = new_hmac_key()
    blob = build_authentication_key(tpm.ek, tpm.srk, hmac_key)
    assert len(blob) == 766
    id_object, secret, duplicate, sym_seed, object_public, data = split_blob(blob)
    assert data == b"\x00\x00"

    inner_key = activate_credential(tpm, tmp_path, id_object, secret)
    assert len(inner_key) == 16

    files = {
        "inner.key": inner_key,
        "dup.priv": duplicate,
        "seed": sym_seed,
        "key.pub": object_public,
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    tpm.run(
        "tpm2_import", "-C", SRK_HANDLE, "-u", tmp_path / "key.pub", "-i", tmp_path / "dup.priv",
        "-s", tmp_path / "seed", "-k", tmp_path / "inner.key", "-r", tmp_path / "key.priv",
    )  # fmt: skip
    loaded = tpm.run(
        "tpm2_load", "-C", SRK_HANDLE, "-u", tmp_path / "key.pub", "-r", tmp_path / "key.priv",
        "-c", tmp_path / "hmac.ctx",
    )  # fmt: skip
    assert name_in(loaded) == tpm_name(object_public[2:]).hex()
    try:
        tpm.run(
            "tpm2_hmac", "-c", tmp_path / "hmac.ctx", "-g", "sha256", "-o", tmp_path / "sig",
            stdin=SAS_STRING,
        )  # fmt: skip
    finally:
        tpm.run("tpm2_flushcontext", "-t")
    expected = hmac.new(hmac_key, SAS_STRING, hashlib.sha256).digest()
    assert (tmp_path / "sig").read_bytes() == expected


def test_swtpm_refuses_a_credential_bound_to_another_key(tpm: Tpm, tmp_path: Path) -> None:
    # Bound to the EK's Name instead of the SRK's: the integrity HMAC cannot match.
    blob = build_authentication_key(tpm.ek, tpm.ek, new_hmac_key())
    id_object, secret, *_ = split_blob(blob)
    with pytest.raises(TpmCommandFailed, match="integrity"):
        activate_credential(tpm, tmp_path, id_object, secret)
