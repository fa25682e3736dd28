"""A TPM in software, for tests: RSA keys whose private halves the test holds, laid out as a
TPM's EK and SRK (protocol.md §6.1), and the TPM's side of the `authenticationKey` blob
(ActivateCredential, then Import with every integrity check TPM 2.0 Part 1 §§23–24 makes).

The engine and transport tests answer TPM challenges with it; the swtpm tests prove the same
blob on a real TPM.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass
from functools import cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from opendps.attestation.tpm import TpmPublicKey, kdfa, parse_tpm_public

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.modes import CFB

EK_ATTRIBUTES = (
    0x000300B2  # fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt
)
SRK_ATTRIBUTES = 0x00030472  # ...|userWithAuth|noDA|restricted|decrypt, no adminWithPolicy
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
HMAC_KEY_ATTRIBUTES = 0x00040440  # userWithAuth | noDA | sign
BLOB_PART_SIZES = (54, 258, 144, 258, 50, 2)
OAEP_SHA256 = hashes.SHA256()


def u16(value: int) -> bytes:
    return struct.pack(">H", value)


def t2b(data: bytes) -> bytes:
    return u16(len(data)) + data


@dataclass(frozen=True)
class Template:
    """The fields of an RSA TPMT_PUBLIC, defaulting to the EK template of protocol.md §6.1."""

    modulus: bytes
    key_type: int = 0x0001
    name_alg: int = 0x000B
    attributes: int = EK_ATTRIBUTES
    auth_policy: bytes = EK_POLICY
    symmetric: bytes = struct.pack(">HHH", 0x0006, 128, 0x0043)
    scheme: bytes = u16(0x0010)
    key_bits: int = 2048
    exponent: int = 0

    def public_area(self) -> bytes:
        return (
            struct.pack(">HHI", self.key_type, self.name_alg, self.attributes)
            + t2b(self.auth_policy)
            + self.symmetric
            + self.scheme
            + struct.pack(">HI", self.key_bits, self.exponent)
            + t2b(self.modulus)
        )

    def tpm2b_public(self) -> bytes:
        return t2b(self.public_area())


@cache
def software_key(which: str) -> rsa.RSAPrivateKey:
    """Stand-ins for a TPM's EK and SRK whose private halves the test holds."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def template_for(key: rsa.RSAPrivateKey, **fields: object) -> Template:
    modulus = key.public_key().public_numbers().n.to_bytes(256, "big")
    return Template(modulus=modulus, **fields)  # type: ignore[arg-type]


def software_ek() -> TpmPublicKey:
    return parse_tpm_public(template_for(software_key("ek")).tpm2b_public(), "ek")


def software_srk() -> TpmPublicKey:
    template = template_for(software_key("srk"), attributes=SRK_ATTRIBUTES, auth_policy=b"")
    return parse_tpm_public(template.tpm2b_public(), "srk")


def split_blob(blob: bytes) -> list[bytes]:
    """The six TPM2B structures, each with its size prefix."""
    parts = []
    offset = 0
    while offset < len(blob):
        (size,) = struct.unpack_from(">H", blob, offset)
        parts.append(blob[offset : offset + 2 + size])
        offset += 2 + size
    assert offset == len(blob)
    return parts


class Unmarshal:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def u16(self) -> int:
        (value,) = struct.unpack_from(">H", self.data, self.offset)
        self.offset += 2
        return int(value)

    def tpm2b(self) -> bytes:
        size = self.u16()
        chunk = self.data[self.offset : self.offset + size]
        assert len(chunk) == size, "truncated"
        self.offset += size
        return chunk

    def rest(self) -> bytes:
        return self.data[self.offset :]


class IntegrityError(Exception):
    """The TPM would answer TPM_RC_INTEGRITY (or refuse the structure)."""


def aes_cfb_decrypt(key: bytes, ciphertext: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), CFB(bytes(16))).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def oaep_decrypt(key: rsa.RSAPrivateKey, secret: bytes, label: bytes) -> bytes:
    oaep = padding.OAEP(mgf=padding.MGF1(OAEP_SHA256), algorithm=OAEP_SHA256, label=label)
    return key.decrypt(Unmarshal(secret).tpm2b(), oaep)


def activate_credential(
    ek_private: rsa.RSAPrivateKey, activated_name: bytes, id_object: bytes, secret: bytes
) -> bytes:
    """TPM2_ActivateCredential (Part 3 §12.5, Part 1 §24): recover the credential (innerKey)."""
    seed = oaep_decrypt(ek_private, secret, b"IDENTITY\x00")
    outer = Unmarshal(Unmarshal(id_object).tpm2b())
    integrity = outer.tpm2b()
    enc_identity = outer.rest()
    integrity_key = kdfa(seed, "INTEGRITY", b"", b"", 256)
    expected = hmac.new(integrity_key, enc_identity + activated_name, hashlib.sha256).digest()
    if not hmac.compare_digest(integrity, expected):
        raise IntegrityError("credential integrity")
    identity = aes_cfb_decrypt(kdfa(seed, "STORAGE", activated_name, b"", 128), enc_identity)
    credential = Unmarshal(identity)
    inner_key = credential.tpm2b()
    if credential.rest():
        raise IntegrityError("credential size")
    return inner_key


def import_object(
    srk_private: rsa.RSAPrivateKey,
    inner_key: bytes,
    object_public: bytes,
    duplicate: bytes,
    in_sym_seed: bytes,
) -> bytes:
    """TPM2_Import (Part 3 §13.3, Part 1 §23) of an HMAC key object: returns the HMAC key."""
    public_area = Unmarshal(object_public).tpm2b()
    name = u16(0x000B) + hashlib.sha256(public_area).digest()
    seed = oaep_decrypt(srk_private, in_sym_seed, b"DUPLICATE\x00")
    outer = Unmarshal(Unmarshal(duplicate).tpm2b())
    outer_hmac = outer.tpm2b()
    dup_sensitive = outer.rest()
    outer_key = kdfa(seed, "INTEGRITY", b"", b"", 256)
    expected = hmac.new(outer_key, dup_sensitive + name, hashlib.sha256).digest()
    if not hmac.compare_digest(outer_hmac, expected):
        raise IntegrityError("outer integrity")
    enc_sensitive = aes_cfb_decrypt(kdfa(seed, "STORAGE", name, b"", 128), dup_sensitive)
    inner = Unmarshal(aes_cfb_decrypt(inner_key, enc_sensitive))
    inner_integrity = inner.tpm2b()
    sensitive = inner.rest()
    if not hmac.compare_digest(inner_integrity, hashlib.sha256(sensitive + name).digest()):
        raise IntegrityError("inner integrity")
    return hmac_key_from(public_area, sensitive)


def hmac_key_from(public_area: bytes, sensitive: bytes) -> bytes:
    """Check the object as TPM2_Load would (public/sensitive binding) and return its key."""
    area = Unmarshal(Unmarshal(sensitive).tpm2b())
    assert area.u16() == 0x0008  # sensitiveType KEYEDHASH
    assert area.tpm2b() == b""  # authValue: the C SDK uses a null password
    seed_value = area.tpm2b()
    key = area.tpm2b()
    assert area.rest() == b""
    public = Unmarshal(public_area)
    assert public.u16() == 0x0008 and public.u16() == 0x000B
    assert struct.unpack(">I", public.data[4:8])[0] == HMAC_KEY_ATTRIBUTES
    public.offset = 8
    assert public.tpm2b() == b""  # authPolicy
    assert public.u16() == 0x0005 and public.u16() == 0x000B  # scheme HMAC(SHA-256)
    if public.tpm2b() != hashlib.sha256(seed_value + key).digest():
        raise IntegrityError("unique does not bind the sensitive area")
    assert public.rest() == b""
    return key


def open_blob(blob: bytes, srk: TpmPublicKey) -> bytes:
    """What the device does with the blob; returns the HMAC key its TPM now holds."""
    id_object, secret, duplicate, sym_seed, object_public, data = split_blob(blob)
    assert data == b"\x00\x00"
    inner_key = activate_credential(software_key("ek"), srk.name, id_object, secret)
    assert len(inner_key) == 16  # the C SDK imports with AES-128 hard-coded
    return import_object(software_key("srk"), inner_key, object_public, duplicate, sym_seed)


@dataclass(frozen=True)
class SoftTpm:
    """A device whose EK and SRK private halves live in software (soft_tpm.py)."""

    endorsement_key: bytes
    storage_root_key: bytes

    @classmethod
    def make(cls) -> SoftTpm:
        ek = template_for(software_key("ek")).tpm2b_public()
        srk_template = template_for(software_key("srk"), attributes=SRK_ATTRIBUTES, auth_policy=b"")
        return cls(ek, srk_template.tpm2b_public())

    @property
    def ek_base64(self) -> str:
        return base64.b64encode(self.endorsement_key).decode()

    def open(self, blob: bytes) -> str:
        """Import the blob's key as the TPM would; the key, base64, as SAS signing keys are."""
        srk = parse_tpm_public(self.storage_root_key, "srk")
        return base64.b64encode(open_blob(blob, srk)).decode()
