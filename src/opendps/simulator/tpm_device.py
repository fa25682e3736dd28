"""The simulated device's TPM, driven through tpm2-pytss (the TCG ESAPI), protocol.md §6.

What a DPS TPM device does with its TPM, as the C SDK (`hsm_client_tpm.c`) and Node
(`azure-iot-security-tpm`) do it: keep an endorsement key (EK) at 0x81010001 and a storage root
key (SRK) at 0x81000001, send both public areas, turn the service's `authenticationKey` blob into
an HMAC key inside the TPM (ActivateCredential with the EK → the inner wrapping key; Import +
Load under the SRK; persist at 0x81000100), then sign SAS strings with TPM2_HMAC.

Why tpm2-pytss: it is the tpm2-software project's own binding (the people who maintain tpm2-tss
and tpm2-tools), in-process (no tool output to parse), and its TCTIs reach swtpm, the Microsoft
simulator and a real TPM (/dev/tpmrm0) alike. It is an optional extra (`opendps[tpm]`), so it is
imported only when a TPM is opened. Every call here blocks on the TPM: async callers use
`asyncio.to_thread`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from types import TracebackType
from typing import Any

# Persistent handles the Azure SDKs use (protocol.md §6.1, §6.3).
EK_HANDLE = 0x81010001
SRK_HANDLE = 0x81000001
DEVICE_KEY_HANDLE = 0x81000100
# TCG EK Credential Profile, template L-1: PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256.
EK_AUTH_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
# TPM2_HMAC takes at most one TPM2B_MAX_BUFFER (1024 bytes on every TPM); longer data goes
# through an HMAC sequence.
MAX_HMAC_BUFFER_BYTES = 1024
# The parts of an `authenticationKey` blob, in order (protocol.md §6.3).
BLOB_PARTS = (
    "credential",  # TPM2B_ID_OBJECT
    "credential_secret",  # TPM2B_ENCRYPTED_SECRET (EK-encrypted seed)
    "duplicate",  # TPM2B_PRIVATE
    "import_seed",  # TPM2B_ENCRYPTED_SECRET (SRK-encrypted seed)
    "key_public",  # TPM2B_PUBLIC of the HMAC key
    "uri_data",  # TPM2B_DATA, may be empty but must be there
)
INSTALL_HINT = "the TPM simulator needs tpm2-pytss: pip install 'opendps[tpm]'"
TPM_PROTOCOLS = ("swtpm", "mssim")

_U16 = struct.Struct(">H")


class TpmError(Exception):
    """The TPM could not be reached, refused an operation, or was handed a malformed key (the
    message says which; it never holds key material)."""


@dataclass(frozen=True, slots=True)
class AuthenticationKeyParts:
    """An `authenticationKey` blob split into its marshalled TPM2B structures (size included)."""

    credential: bytes
    credential_secret: bytes
    duplicate: bytes
    import_seed: bytes
    key_public: bytes
    uri_data: bytes


def split_authentication_key(blob: bytes) -> AuthenticationKeyParts:
    """Split a blob into its six TPM2B parts; ValueError unless it is exactly those six."""
    parts: list[bytes] = []
    offset = 0
    for name in BLOB_PARTS:
        if offset + _U16.size > len(blob):
            raise ValueError(f"authenticationKey ends before its {name} part")
        (size,) = _U16.unpack_from(blob, offset)
        end = offset + _U16.size + size
        if end > len(blob):
            raise ValueError(f"authenticationKey's {name} part is cut short")
        parts.append(blob[offset:end])
        offset = end
    if offset != len(blob):
        raise ValueError(f"authenticationKey has {len(blob) - offset} bytes after its six parts")
    return AuthenticationKeyParts(*parts)


def tcti_for(host: str, port: int, protocol: str = "swtpm") -> str:
    """The tpm2-tss TCTI string for a software TPM listening on `host:port`.

    `swtpm` takes raw TPM commands (Debian's swtpm); `mssim` is the Microsoft reference
    simulator's framing (its platform port is `port + 1`, which the TCTI powers on itself).
    """
    if protocol not in TPM_PROTOCOLS:
        raise ValueError(f"TPM protocol must be one of {', '.join(TPM_PROTOCOLS)}")
    return f"{protocol}:host={host},port={port}"


@dataclass(frozen=True, slots=True)
class TpmPublicKeys:
    """The marshalled TPM2B_PUBLIC of the EK and the SRK, as the device sends them (§6.1)."""

    endorsement_key: bytes
    storage_root_key: bytes


class TpmDevice:
    """An open ESAPI context on one TPM. Use as a context manager; not thread-safe."""

    def __init__(self, tcti: str) -> None:
        self._tpm2 = _import_tpm2_pytss()
        self._tcti = tcti
        try:
            self._esapi: Any = self._tpm2.ESAPI(tcti)
        except self._tpm2.TSS2_Exception as err:
            raise TpmError(f"cannot open the TPM at {tcti}: {err}") from None
        try:
            self._start_up()
        except TpmError:
            self.close()
            raise

    def __enter__(self) -> TpmDevice:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._esapi.close()

    # -- keys ---------------------------------------------------------------------------------

    def ensure_keys(self) -> TpmPublicKeys:
        """The EK and SRK public areas, creating and persisting either one that is missing."""
        with self._tpm_errors("creating or reading the EK and SRK"):
            persistent = self._persistent_handles()
            ek = self._ensure_primary(
                EK_HANDLE, self._tpm2.ESYS_TR.ENDORSEMENT, _ek_template(self._tpm2), persistent
            )
            srk = self._ensure_primary(
                SRK_HANDLE, self._tpm2.ESYS_TR.OWNER, _srk_template(self._tpm2), persistent
            )
            return TpmPublicKeys(self._public_bytes(ek), self._public_bytes(srk))

    def _ensure_primary(
        self, persistent_handle: int, hierarchy: Any, template: Any, persistent: set[int]
    ) -> Any:
        if persistent_handle in persistent:
            return self._esapi.tr_from_tpmpublic(persistent_handle)
        transient = self._esapi.create_primary(None, template, hierarchy)[0]
        try:
            return self._esapi.evict_control(self._tpm2.ESYS_TR.OWNER, transient, persistent_handle)
        finally:
            self._esapi.flush_context(transient)

    def _public_bytes(self, handle: Any) -> bytes:
        return bytes(self._esapi.read_public(handle)[0].marshal())

    def _persistent_handles(self) -> set[int]:
        tpm2 = self._tpm2
        handles: set[int] = set()
        more, start = True, int(tpm2.TPM2_HC.PERSISTENT_FIRST)
        while more:
            more, data = self._esapi.get_capability(tpm2.TPM2_CAP.HANDLES, start, 64)
            found = [int(handle) for handle in data.data.handles]
            handles.update(found)
            if not found:
                break
            start = max(found) + 1
        return handles

    # -- the service's key --------------------------------------------------------------------

    def activate_and_import(self, blob: bytes) -> None:
        """Unwrap an `authenticationKey` blob into the HMAC key at 0x81000100 (§6.3),
        replacing the key that was there. TpmError for a malformed blob, or when the TPM
        refuses it (a blob made for another EK or SRK)."""
        try:
            parts = split_authentication_key(blob)
        except ValueError as err:
            raise TpmError(str(err)) from None
        tpm2 = self._tpm2
        types = tpm2.types
        with self._tpm_errors("unwrapping the authenticationKey"):
            ek = self._esapi.tr_from_tpmpublic(EK_HANDLE)
            srk = self._esapi.tr_from_tpmpublic(SRK_HANDLE)
            inner_key = self._activate_credential(
                srk,
                ek,
                types.TPM2B_ID_OBJECT.unmarshal(parts.credential)[0],
                types.TPM2B_ENCRYPTED_SECRET.unmarshal(parts.credential_secret)[0],
            )
            public = types.TPM2B_PUBLIC.unmarshal(parts.key_public)[0]
            private = self._esapi.import_(
                srk,
                types.TPM2B_DATA(bytes(inner_key)),
                public,
                types.TPM2B_PRIVATE.unmarshal(parts.duplicate)[0],
                types.TPM2B_ENCRYPTED_SECRET.unmarshal(parts.import_seed)[0],
                _aes128_cfb(tpm2),
            )
            loaded = self._esapi.load(srk, private, public)
            try:
                self._evict_device_key()
                self._esapi.evict_control(tpm2.ESYS_TR.OWNER, loaded, DEVICE_KEY_HANDLE)
            finally:
                self._esapi.flush_context(loaded)

    def _activate_credential(self, srk: Any, ek: Any, credential: Any, secret: Any) -> Any:
        """ActivateCredential under the EK's policy: PolicySecret(TPM_RH_ENDORSEMENT)."""
        tpm2 = self._tpm2
        session = self._esapi.start_auth_session(
            tpm2.ESYS_TR.NONE,
            tpm2.ESYS_TR.NONE,
            tpm2.TPM2_SE.POLICY,
            tpm2.types.TPMT_SYM_DEF(algorithm=tpm2.TPM2_ALG.NULL),
            tpm2.TPM2_ALG.SHA256,
        )
        try:
            self._esapi.policy_secret(tpm2.ESYS_TR.ENDORSEMENT, session)
            return self._esapi.activate_credential(
                srk,
                ek,
                credential,
                secret,
                session1=tpm2.ESYS_TR.PASSWORD,
                session2=session,
            )
        finally:
            self._esapi.flush_context(session)

    def _evict_device_key(self) -> None:
        if DEVICE_KEY_HANDLE in self._persistent_handles():
            old = self._esapi.tr_from_tpmpublic(DEVICE_KEY_HANDLE)
            self._esapi.evict_control(self._tpm2.ESYS_TR.OWNER, old, DEVICE_KEY_HANDLE)

    # -- signing ------------------------------------------------------------------------------

    def sign(self, data: bytes) -> bytes:
        """HMAC-SHA256 of `data` with the key at 0x81000100 (how a TPM device signs its SAS)."""
        tpm2 = self._tpm2
        with self._tpm_errors("signing with the device key"):
            key = self._esapi.tr_from_tpmpublic(DEVICE_KEY_HANDLE)
            if len(data) <= MAX_HMAC_BUFFER_BYTES:
                return bytes(self._esapi.hmac(key, data, tpm2.TPM2_ALG.SHA256))
            sequence = self._esapi.hmac_start(key, b"", tpm2.TPM2_ALG.SHA256)
            for start in range(0, len(data), MAX_HMAC_BUFFER_BYTES):
                self._esapi.sequence_update(sequence, data[start : start + MAX_HMAC_BUFFER_BYTES])
            digest = self._esapi.sequence_complete(sequence, b"")[0]
            return bytes(digest)

    # -- plumbing -----------------------------------------------------------------------------

    def _start_up(self) -> None:
        """TPM2_Startup(CLEAR): a freshly powered simulator needs it; a TPM already started
        (firmware did it, or swtpm's `startup-clear`) answers TPM_RC_INITIALIZE, which is fine."""
        tpm2 = self._tpm2
        try:
            self._esapi.startup(tpm2.TPM2_SU.CLEAR)
        except tpm2.TSS2_Exception as err:
            if err.rc != tpm2.TPM2_RC.INITIALIZE:
                raise TpmError(f"cannot start the TPM at {self._tcti}: {err}") from None

    def _tpm_errors(self, doing: str) -> _TranslateTpmErrors:
        return _TranslateTpmErrors(self._tpm2.TSS2_Exception, doing)


class _TranslateTpmErrors:
    """Turns tpm2-pytss's exception into TpmError, so callers need not import tpm2-pytss."""

    def __init__(self, tss_exception: type[Exception], doing: str) -> None:
        self._tss_exception = tss_exception
        self._doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and isinstance(exc, self._tss_exception):
            raise TpmError(f"the TPM failed {self._doing}: {exc}") from exc


class _Tpm2:
    """The tpm2-pytss names this module uses, imported on first use."""

    def __init__(self) -> None:
        import tpm2_pytss
        from tpm2_pytss import types
        from tpm2_pytss.constants import (
            ESYS_TR,
            TPM2_ALG,
            TPM2_CAP,
            TPM2_HC,
            TPM2_RC,
            TPM2_SE,
            TPM2_SU,
            TPMA_OBJECT,
        )

        self.ESAPI = tpm2_pytss.ESAPI
        self.TSS2_Exception: type[Exception] = tpm2_pytss.TSS2_Exception
        self.types = types
        self.ESYS_TR = ESYS_TR
        self.TPM2_ALG = TPM2_ALG
        self.TPM2_CAP = TPM2_CAP
        self.TPM2_HC = TPM2_HC
        self.TPM2_RC = TPM2_RC
        self.TPM2_SE = TPM2_SE
        self.TPM2_SU = TPM2_SU
        self.TPMA_OBJECT = TPMA_OBJECT


def _import_tpm2_pytss() -> Any:
    # tpm2-tss logs every TPM error code to stderr itself; TpmError already carries it, and a
    # CLI user should see one message. An explicit TSS2_LOG setting still wins.
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    try:
        return _Tpm2()
    except ImportError as err:  # the package, or the libtss2 shared libraries it loads
        raise TpmError(f"{INSTALL_HINT} ({err})") from None


def _aes128_cfb(tpm2: Any) -> Any:
    types = tpm2.types
    return types.TPMT_SYM_DEF_OBJECT(
        algorithm=tpm2.TPM2_ALG.AES,
        keyBits=types.TPMU_SYM_KEY_BITS(aes=128),
        mode=types.TPMU_SYM_MODE(aes=tpm2.TPM2_ALG.CFB),
    )


def _rsa_storage_template(tpm2: Any, attributes: Any, auth_policy: bytes, unique: bytes) -> Any:
    """An RSA-2048 restricted decryption key (AES-128-CFB, no scheme, exponent 65537)."""
    types = tpm2.types
    return types.TPM2B_PUBLIC(
        publicArea=types.TPMT_PUBLIC(
            type=tpm2.TPM2_ALG.RSA,
            nameAlg=tpm2.TPM2_ALG.SHA256,
            objectAttributes=attributes,
            authPolicy=auth_policy,
            parameters=types.TPMU_PUBLIC_PARMS(
                rsaDetail=types.TPMS_RSA_PARMS(
                    symmetric=_aes128_cfb(tpm2),
                    scheme=types.TPMT_RSA_SCHEME(scheme=tpm2.TPM2_ALG.NULL),
                    keyBits=2048,
                    exponent=0,
                ),
            ),
            unique=types.TPMU_PUBLIC_ID(rsa=unique),
        )
    )


def _ek_template(tpm2: Any) -> Any:
    """The TCG default EK template L-1 (protocol.md §6.1): the one tpm2_createek and the SDKs
    use, so a real TPM derives the same EK its certificate names."""
    a = tpm2.TPMA_OBJECT
    attributes = (
        a.FIXEDTPM
        | a.FIXEDPARENT
        | a.SENSITIVEDATAORIGIN
        | a.ADMINWITHPOLICY
        | a.RESTRICTED
        | a.DECRYPT
    )
    return _rsa_storage_template(tpm2, attributes, EK_AUTH_POLICY, b"\x00" * 256)


def _srk_template(tpm2: Any) -> Any:
    """The SRK of protocol.md §6.1 (no auth value, no dictionary-attack lockout)."""
    a = tpm2.TPMA_OBJECT
    attributes = (
        a.FIXEDTPM
        | a.FIXEDPARENT
        | a.SENSITIVEDATAORIGIN
        | a.USERWITHAUTH
        | a.NODA
        | a.RESTRICTED
        | a.DECRYPT
    )
    return _rsa_storage_template(tpm2, attributes, b"", b"")
