"""TPM 2.0 attestation: read the device's EK/SRK and build the `authenticationKey` challenge.

The service never talks to a TPM. It proves that the device holds the enrolled EK by sending a
blob that only that TPM can open (protocol.md §6): a credential made against the EK and bound to
the SRK's Name (TPM2_MakeCredential, TPM 2.0 Part 1 §24) carries a 16-byte `innerKey`, and an HMAC
key object duplicated to the SRK (Part 1 §23) is wrapped with that `innerKey`. The device runs
ActivateCredential + Import + Load and signs its SAS token with the HMAC key, which the service
checks with the key it chose here. Everything is big-endian TPM marshalling; no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from opendps.model.errors import INVALID_BODY, DpsError

try:
    # cryptography moved CFB to "decrepit" (it warns on the old path and drops it in 49).
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography only has the old path
    from cryptography.hazmat.primitives.ciphers.modes import CFB

# TPM_ALG_ID values (TPM 2.0 Part 2 §6.3) and TPMA_OBJECT bits (Part 2 §8.3) used here.
TPM_ALG_RSA = 0x0001
TPM_ALG_HMAC = 0x0005
TPM_ALG_AES = 0x0006
TPM_ALG_KEYEDHASH = 0x0008
TPM_ALG_SHA256 = 0x000B
TPM_ALG_NULL = 0x0010
TPM_ALG_CFB = 0x0043

TPMA_USER_WITH_AUTH = 0x00000040
TPMA_NO_DA = 0x00000400
TPMA_RESTRICTED = 0x00010000
TPMA_DECRYPT = 0x00020000
TPMA_SIGN_ENCRYPT = 0x00040000

# Only what the Azure SDKs create (protocol.md §6.1): RSA-2048 EK/SRK with AES-128-CFB.
RSA_KEY_BITS = 2048
MODULUS_BYTES = RSA_KEY_BITS // 8
AES_KEY_BITS = 128
DEFAULT_RSA_EXPONENT = 65537  # a TPM writes 0 for it

HMAC_KEY_BYTES = 32
# The C SDK imports with AES-128 hard-coded, so the inner wrapper key is 16 bytes (§6.3).
INNER_KEY_BYTES = 16
# Seeds are as long as the protecting key's nameAlg digest (Part 1 §24.4, §23.3.2).
SEED_BYTES = 32
# TPM2B_SENSITIVE_DATA holds at most MAX_SYM_DATA bytes (Part 2 §11.1.14).
MAX_HMAC_KEY_BYTES = 128

# userWithAuth | noDA | sign: noDA because libtpms answers the first TPM2_HMAC after start-up with
# TPM_RC_RETRY otherwise and the C SDK does not retry (§6.4 D.2). fixedTPM/fixedParent stay clear:
# an imported object cannot carry them.
HMAC_KEY_ATTRIBUTES = TPMA_USER_WITH_AUTH | TPMA_NO_DA | TPMA_SIGN_ENCRYPT

_SHA256 = hashes.SHA256()
_IDENTITY_LABEL = b"IDENTITY\x00"
_DUPLICATE_LABEL = b"DUPLICATE\x00"


@dataclass(frozen=True, slots=True)
class TpmPublicKey:
    """An RSA storage or endorsement key as a device sent it (a TPM2B_PUBLIC)."""

    raw: bytes  # the TPM2B_PUBLIC as sent, with its UINT16 size
    public_area: bytes  # the marshalled TPMT_PUBLIC
    modulus: int
    exponent: int  # already resolved: 0 in the structure means 65537
    key_bits: int
    symmetric_bits: int
    attributes: int
    name: bytes  # u16(nameAlg) || SHA-256(public_area)

    def rsa_public_key(self) -> rsa.RSAPublicKey:
        return rsa.RSAPublicNumbers(self.exponent, self.modulus).public_key()


class _Reader:
    """Reads TPM marshalling from a buffer; any shortfall is a DpsError naming the field."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._offset = 0
        self._what = what

    def take(self, count: int, field: str) -> bytes:
        end = self._offset + count
        if end > len(self._data):
            raise _invalid(self._what, f"is truncated in {field}")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "big")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "big")

    def tpm2b(self, field: str) -> bytes:
        return self.take(self.u16(f"{field} size"), field)

    def expect_end(self) -> None:
        if self._offset != len(self._data):
            extra = len(self._data) - self._offset
            raise _invalid(self._what, f"has {extra} trailing bytes after the TPMT_PUBLIC")


def _invalid(what: str, reason: str) -> DpsError:
    return DpsError(INVALID_BODY, f"{what} {reason}")


def parse_tpm_public(data: bytes, what: str) -> TpmPublicKey:
    """Parse a TPM2B_PUBLIC holding an RSA-2048 restricted decryption key (an EK or SRK).

    `what` names the field in error messages. Raises `DpsError(INVALID_BODY)` for anything
    malformed or outside what the Azure SDKs create; never any other exception.
    """
    data = bytes(data)
    outer = _Reader(data, what)
    size = outer.u16("the TPM2B_PUBLIC size")
    if size != len(data) - 2:
        raise _invalid(what, f"says its TPMT_PUBLIC is {size} bytes but {len(data) - 2} follow")
    public_area = data[2:]
    reader = _Reader(public_area, what)
    key_type = reader.u16("type")
    if key_type != TPM_ALG_RSA:
        raise _invalid(what, f"has key type 0x{key_type:04x}; only RSA (0x0001) is supported")
    name_alg = reader.u16("nameAlg")
    if name_alg != TPM_ALG_SHA256:
        raise _invalid(what, f"has nameAlg 0x{name_alg:04x}; only SHA-256 (0x000b) is supported")
    attributes = reader.u32("objectAttributes")
    if attributes & (TPMA_RESTRICTED | TPMA_DECRYPT) != TPMA_RESTRICTED | TPMA_DECRYPT:
        raise _invalid(what, "is not a restricted decryption key (restricted|decrypt unset)")
    reader.tpm2b("authPolicy")
    symmetric_bits = _read_symmetric(reader, what)
    scheme = reader.u16("scheme")
    if scheme != TPM_ALG_NULL:
        raise _invalid(what, f"has scheme 0x{scheme:04x}; a storage key's must be NULL (0x0010)")
    key_bits = reader.u16("keyBits")
    if key_bits != RSA_KEY_BITS:
        raise _invalid(what, f"is an RSA-{key_bits} key; only RSA-2048 is supported")
    exponent = reader.u32("exponent") or DEFAULT_RSA_EXPONENT
    modulus_bytes = reader.tpm2b("unique (modulus)")
    reader.expect_end()
    modulus = _check_rsa_numbers(modulus_bytes, exponent, what)
    return TpmPublicKey(
        raw=data,
        public_area=public_area,
        modulus=modulus,
        exponent=exponent,
        key_bits=key_bits,
        symmetric_bits=symmetric_bits,
        attributes=attributes,
        name=tpm_name(public_area),
    )


def _read_symmetric(reader: _Reader, what: str) -> int:
    """TPMT_SYM_DEF_OBJECT: only AES-128-CFB (§6.1); returns the key bits."""
    algorithm = reader.u16("symmetric algorithm")
    if algorithm == TPM_ALG_NULL:
        raise _invalid(what, "has no symmetric algorithm; AES-128-CFB is required")
    key_bits = reader.u16("symmetric keyBits")
    mode = reader.u16("symmetric mode")
    if (algorithm, key_bits, mode) != (TPM_ALG_AES, AES_KEY_BITS, TPM_ALG_CFB):
        raise _invalid(
            what,
            f"has symmetric algorithm 0x{algorithm:04x}/{key_bits}/mode 0x{mode:04x}; "
            "only AES-128-CFB is supported",
        )
    return key_bits


def _check_rsa_numbers(modulus_bytes: bytes, exponent: int, what: str) -> int:
    """Refuse numbers that are no RSA-2048 public key, so encrypting to them cannot fail later."""
    if len(modulus_bytes) != MODULUS_BYTES:
        raise _invalid(what, f"has a {len(modulus_bytes)}-byte modulus; RSA-2048 needs 256")
    modulus = int.from_bytes(modulus_bytes, "big")
    if modulus.bit_length() != RSA_KEY_BITS or modulus % 2 == 0:
        raise _invalid(what, "has a modulus that is not an odd 2048-bit number")
    if exponent < 3 or exponent % 2 == 0:
        raise _invalid(what, f"has an invalid RSA exponent {exponent}")
    return modulus


def parse_tpm_public_base64(text: object, what: str) -> TpmPublicKey:
    """`parse_tpm_public` for the base64 form in JSON bodies and enrollments."""
    if not isinstance(text, str):
        raise _invalid(what, "must be a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, and non-ASCII characters
        raise _invalid(what, "is not valid base64") from None
    return parse_tpm_public(data, what)


def same_key(a: TpmPublicKey, b: TpmPublicKey) -> bool:
    """Whether two TPM2B_PUBLICs hold the same RSA key, whatever else differs (§6.1)."""
    return a.modulus == b.modulus and a.exponent == b.exponent


def tpm_name(public_area: bytes) -> bytes:
    """The Name of an object with nameAlg SHA-256: u16(0x000B) || SHA-256(TPMT_PUBLIC)."""
    return struct.pack(">H", TPM_ALG_SHA256) + hashlib.sha256(public_area).digest()


def default_registration_id(endorsement_key_raw: bytes) -> str:
    """Lowercase unpadded base32 of SHA-256 over the EK as sent (52 characters, §6.1)."""
    digest = hashlib.sha256(endorsement_key_raw).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def kdfa(key: bytes, label: str, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """TPM KDFa with HMAC-SHA-256 (Part 1 §11.4.10.2), for whole bytes only."""
    if bits <= 0 or bits % 8:
        raise ValueError(f"kdfa needs a positive whole number of bytes, not {bits} bits")
    fixed = label.encode("ascii") + b"\x00" + context_u + context_v + struct.pack(">I", bits)
    output = b""
    counter = 0
    while len(output) * 8 < bits:
        counter += 1
        output += hmac.new(key, struct.pack(">I", counter) + fixed, hashlib.sha256).digest()
    return output[: bits // 8]


def new_hmac_key() -> bytes:
    """A fresh key for the device to hold in its TPM (and for the service to verify with)."""
    return secrets.token_bytes(HMAC_KEY_BYTES)


def build_authentication_key(
    ek: TpmPublicKey,
    srk: TpmPublicKey,
    hmac_key: bytes,
    *,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> bytes:
    """The `authenticationKey` blob #1..#6 (§6.3) that installs `hmac_key` in the device's TPM.

    Only the TPM holding `ek` (to activate the credential) and `srk` (to import) can open it.
    `random_bytes` supplies innerKey and the seeds; RSA-OAEP adds its own randomness, so #2 and
    #4 differ between calls even with the same `random_bytes`.
    """
    if not 0 < len(hmac_key) <= MAX_HMAC_KEY_BYTES:
        raise ValueError(f"an HMAC key must be 1 to {MAX_HMAC_KEY_BYTES} bytes")
    inner_key = random_bytes(INNER_KEY_BYTES)
    id_object, credential_seed = _make_credential(ek, srk.name, inner_key, random_bytes)
    object_public, private, duplication_seed = _duplicate_hmac_key(
        srk, hmac_key, inner_key, random_bytes
    )
    return b"".join(
        (
            id_object,  # 1 TPM2B_ID_OBJECT
            credential_seed,  # 2 TPM2B_ENCRYPTED_SECRET
            private,  # 3 TPM2B_PRIVATE
            duplication_seed,  # 4 TPM2B_ENCRYPTED_SECRET
            _t2b(object_public),  # 5 TPM2B_PUBLIC
            _t2b(b""),  # 6 TPM2B_DATA: Node refuses the blob without it
        )
    )


def _make_credential(
    ek: TpmPublicKey, srk_name: bytes, inner_key: bytes, random_bytes: Callable[[int], bytes]
) -> tuple[bytes, bytes]:
    """TPM2_MakeCredential: (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET) carrying `inner_key`."""
    seed = random_bytes(SEED_BYTES)
    encrypted_seed = _encrypt_seed(ek, seed, _IDENTITY_LABEL)
    symmetric_key = kdfa(seed, "STORAGE", srk_name, b"", ek.symmetric_bits)
    enc_identity = _aes_cfb(symmetric_key, _t2b(inner_key))
    integrity_key = kdfa(seed, "INTEGRITY", b"", b"", 256)
    integrity = hmac.new(integrity_key, enc_identity + srk_name, hashlib.sha256).digest()
    return _t2b(_t2b(integrity) + enc_identity), _t2b(encrypted_seed)


def _duplicate_hmac_key(
    srk: TpmPublicKey, hmac_key: bytes, inner_key: bytes, random_bytes: Callable[[int], bytes]
) -> tuple[bytes, bytes, bytes]:
    """TPM2_Duplicate of a new HMAC key object to the SRK, with an inner wrapper of `inner_key`.

    Returns (TPMT_PUBLIC, TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET).
    """
    obfuscate = random_bytes(SEED_BYTES)
    public_area = _hmac_key_public_area(hashlib.sha256(obfuscate + hmac_key).digest())
    object_name = tpm_name(public_area)
    sensitive_area = (
        struct.pack(">H", TPM_ALG_KEYEDHASH) + _t2b(b"") + _t2b(obfuscate) + _t2b(hmac_key)
    )
    sensitive = _t2b(sensitive_area)
    inner_integrity = hashlib.sha256(sensitive + object_name).digest()
    enc_sensitive = _aes_cfb(inner_key, _t2b(inner_integrity) + sensitive)

    seed = random_bytes(SEED_BYTES)
    encrypted_seed = _encrypt_seed(srk, seed, _DUPLICATE_LABEL)
    symmetric_key = kdfa(seed, "STORAGE", object_name, b"", srk.symmetric_bits)
    dup_sensitive = _aes_cfb(symmetric_key, enc_sensitive)
    outer_key = kdfa(seed, "INTEGRITY", b"", b"", 256)
    outer_hmac = hmac.new(outer_key, dup_sensitive + object_name, hashlib.sha256).digest()
    return public_area, _t2b(_t2b(outer_hmac) + dup_sensitive), _t2b(encrypted_seed)


def _hmac_key_public_area(unique: bytes) -> bytes:
    """TPMT_PUBLIC of a KEYEDHASH HMAC-SHA-256 signing key without auth policy."""
    return (
        struct.pack(">HHI", TPM_ALG_KEYEDHASH, TPM_ALG_SHA256, HMAC_KEY_ATTRIBUTES)
        + _t2b(b"")  # authPolicy
        + struct.pack(">HH", TPM_ALG_HMAC, TPM_ALG_SHA256)  # scheme HMAC(SHA-256)
        + _t2b(unique)
    )


def _encrypt_seed(key: TpmPublicKey, seed: bytes, label: bytes) -> bytes:
    oaep = padding.OAEP(mgf=padding.MGF1(_SHA256), algorithm=_SHA256, label=label)
    return key.rsa_public_key().encrypt(seed, oaep)


def _aes_cfb(key: bytes, plaintext: bytes) -> bytes:
    """AES in CFB mode with full-block feedback and a zero IV, as TPMs use it."""
    encryptor = Cipher(algorithms.AES(key), CFB(bytes(16))).encryptor()
    return encryptor.update(plaintext) + encryptor.finalize()


def _t2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data
