"""The DPS `TPM` SASL mechanism, server side, sans-I/O (protocol.md §4.4, §6.2).

A TPM device proves itself inside SASL: it sends its endorsement key (EK) and storage root key
(SRK), we answer with the `authenticationKey` blob that only its TPM can import, and it signs a
SAS token with the imported key. The exchange, client frames on the left:

    init      0x00 ‖ idScope ‖ 0x00 ‖ registrationId ‖ 0x00 ‖ EK
                                         challenge   0x00
    response  0x00 ‖ SRK                 (the engine makes the blob: `KeyNeeded`)
                                         challenge   0x80|seq ‖ chunk     (not the last one)
    response  0x00                       (one per non-final chunk)
                                         challenge   0xC0|seq ‖ chunk     (the last one)
    response  0x00 ‖ SAS token           (the engine checks it: `TokenPresented`)

The first byte of each client frame is a control byte: 0x00 means "all in this frame". The C
SDK would split an init or SRK above 470 bytes into frames with 0x80|seq control bytes; no
RSA-2048 key gets there (§4.4 step 1), so a set top bit is refused rather than half-supported.

This module knows bytes and states only: no frames (sasl.py), no engine (adapter.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from opendps.transports.amqp.sasl import SaslIdentity

TPM = "TPM"

# The C SDK accumulates chunks of at most 470 bytes (its MAX_FRAME_DATA_LEN, chosen to fit the
# 512-byte minimum SASL frame) and checks each chunk's 2-bit sequence number against its own
# counter, so a blob may take at most 4 chunks. A ~766-byte blob takes 2.
MAX_CHUNK_BYTES = 470
MAX_CHUNKS = 4
CHUNK = 0x80  # control byte: a chunk of a multi-frame value
LAST_CHUNK = 0x40  # control byte: ... and the last one
SEQUENCE_MASK = 0x03

WHOLE = 0x00  # control byte: the value is complete in this frame
SEND_SRK = b"\x00"  # the first challenge: a single byte asks for the SRK
ACK = b"\x00"  # the client's answer to a non-final chunk


@dataclass(frozen=True, slots=True)
class TpmKeys:
    """The device's claim: who it is and its two public keys (raw TPM2B_PUBLIC, not secret)."""

    id_scope: str
    registration_id: str
    endorsement_key: bytes
    storage_root_key: bytes


@dataclass(frozen=True, slots=True)
class SendChallenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class KeyNeeded:
    """Ask the engine for the `authenticationKey` blob, then call `key_ready()`."""

    keys: TpmKeys


@dataclass(frozen=True, slots=True)
class TokenPresented:
    """Ask the engine to check the token, then call `accepted()` (or fail the SASL layer)."""

    id_scope: str
    registration_id: str
    token: str

    def __repr__(self) -> str:  # the token is a credential: keep it out of any debug output
        return (
            f"TokenPresented(id_scope={self.id_scope!r}, registration_id={self.registration_id!r})"
        )


@dataclass(frozen=True, slots=True)
class Refuse:
    """The client broke the mechanism: fail SASL with outcome `auth`. `reason` is safe to log."""

    reason: str


TpmStep = SendChallenge | KeyNeeded | TokenPresented | Refuse


class _State(Enum):
    AWAITING_INIT = auto()
    AWAITING_SRK = auto()
    MAKING_KEY = auto()  # the engine is making the blob
    SENDING_KEY = auto()  # a non-final chunk is out, waiting for its ACK
    AWAITING_TOKEN = auto()
    CHECKING_TOKEN = auto()  # the engine is checking the token
    DONE = auto()


class TpmSaslExchange:
    """One TPM SASL exchange. Feed it the init and each response; it answers with a step."""

    def __init__(self) -> None:
        self._state = _State.AWAITING_INIT
        self._id_scope = ""
        self._registration_id = ""
        self._endorsement_key = b""
        self._chunks: list[bytes] = []
        self._sent = 0
        self._token: str | None = None

    def on_init(self, initial_response: bytes) -> SendChallenge | Refuse:
        if self._state is not _State.AWAITING_INIT:
            return self._refuse("a second TPM init")
        parsed = _parse_init(initial_response)
        if isinstance(parsed, Refuse):
            return self._refuse(parsed.reason)
        self._id_scope, self._registration_id, self._endorsement_key = parsed
        self._state = _State.AWAITING_SRK
        return SendChallenge(SEND_SRK)

    def on_response(self, response: bytes) -> TpmStep:
        state = self._state
        if state is _State.AWAITING_SRK:
            return self._on_srk(response)
        if state is _State.SENDING_KEY:
            if response != ACK:
                return self._refuse("expected 0x00 after a key chunk")
            return self._next_chunk()
        if state is _State.AWAITING_TOKEN:
            return self._on_token(response)
        # MAKING_KEY / CHECKING_TOKEN: SASL is lockstep, nothing may arrive before our challenge.
        return self._refuse("a SASL response before the server's challenge")

    def key_ready(self, authentication_key: bytes) -> SendChallenge:
        """The engine's blob: returns the first chunk. ValueError (our bug, not the client's)
        if not asked for or too long for 4 chunks."""
        if self._state is not _State.MAKING_KEY:
            raise ValueError("no authentication key was asked for")
        if not authentication_key or len(authentication_key) > MAX_CHUNKS * MAX_CHUNK_BYTES:
            raise ValueError(f"an authentication key of {len(authentication_key)} bytes")
        self._chunks = [
            authentication_key[start : start + MAX_CHUNK_BYTES]
            for start in range(0, len(authentication_key), MAX_CHUNK_BYTES)
        ]
        self._sent = 0
        return self._next_chunk()

    def accepted(self) -> SaslIdentity:
        """The engine accepted the token: the identity the connection carries from now on
        (the token as password, as for PLAIN, so requests present it as a SAS credential)."""
        if self._state is not _State.CHECKING_TOKEN or self._token is None:
            raise ValueError("no token was checked")
        self._state = _State.DONE
        username = f"{self._id_scope}/registrations/{self._registration_id}"
        return SaslIdentity(TPM, username, self._token)

    # -- internals ---------------------------------------------------------------------------

    def _on_srk(self, response: bytes) -> KeyNeeded | Refuse:
        value = _whole_value(response, "SRK")
        if isinstance(value, Refuse):
            return self._refuse(value.reason)
        self._state = _State.MAKING_KEY
        keys = TpmKeys(self._id_scope, self._registration_id, self._endorsement_key, value)
        return KeyNeeded(keys)

    def _next_chunk(self) -> SendChallenge:
        index = self._sent
        last = index == len(self._chunks) - 1
        control = CHUNK | (LAST_CHUNK if last else 0) | (index & SEQUENCE_MASK)
        self._sent += 1
        self._state = _State.AWAITING_TOKEN if last else _State.SENDING_KEY
        return SendChallenge(bytes([control]) + self._chunks[index])

    def _on_token(self, response: bytes) -> TokenPresented | Refuse:
        value = _whole_value(response, "SAS token")
        if isinstance(value, Refuse):
            return self._refuse(value.reason)
        try:
            token = value.decode("ascii")  # SAS tokens are URL-encoded ASCII (§2.1)
        except UnicodeDecodeError:
            return self._refuse("the SAS token is not ASCII")
        self._token = token
        self._state = _State.CHECKING_TOKEN
        return TokenPresented(self._id_scope, self._registration_id, token)

    def _refuse(self, reason: str) -> Refuse:
        self._state = _State.DONE
        return Refuse(reason)


def _whole_value(response: bytes, name: str) -> bytes | Refuse:
    """`0x00 ‖ value`: a value complete in one frame."""
    if not response:
        return Refuse(f"an empty {name} response")
    if response[0] != WHOLE:
        return Refuse(f"a {name} split across frames (control byte {response[0]:#04x})")
    if len(response) == 1:
        return Refuse(f"an empty {name}")
    return response[1:]


def _parse_init(initial_response: bytes) -> tuple[str, str, bytes] | Refuse:
    """`0x00 ‖ idScope ‖ 0x00 ‖ registrationId ‖ 0x00 ‖ EK` (the EK may contain 0x00 bytes)."""
    value = _whole_value(initial_response, "TPM init")
    if isinstance(value, Refuse):
        return value
    parts = value.split(b"\x00", 2)
    if len(parts) != 3:
        return Refuse("a TPM init without idScope, registrationId and EK")
    scope, registration, endorsement_key = parts
    try:
        id_scope, registration_id = scope.decode("ascii"), registration.decode("ascii")
    except UnicodeDecodeError:
        return Refuse("a TPM init with a non-ASCII idScope or registrationId")
    for text in (id_scope, registration_id):
        # They become the `{idScope}/registrations/{registrationId}` username; the engine
        # checks their exact syntax, this only keeps that username unambiguous.
        if not text or not text.isprintable() or "/" in text:
            return Refuse("a TPM init with an empty or malformed idScope or registrationId")
    if not endorsement_key:
        return Refuse("a TPM init without an endorsement key")
    return id_scope, registration_id, endorsement_key
