"""The client side of DPS's `TPM` SASL mechanism (protocol.md §4.4), sans-I/O.

Why our own: proton's client SASL offers only the mechanisms of its SASL library, and `TPM` is
DPS's private one, so the simulator speaks the SASL layer itself and hands proton the stream
after `sasl-outcome` (as the server does, transports/amqp/sasl.py). The exchange:

    server: SASL header, sasl-mechanisms (must list TPM)
    client: SASL header, sasl-init TPM, 0x00 ‖ idScope ‖ 0x00 ‖ registrationId ‖ 0x00 ‖ EK
    server: sasl-challenge 0x00                 client: sasl-response 0x00 ‖ SRK
    server: sasl-challenge 0x80|seq ‖ chunk      client: sasl-response 0x00   (non-final chunks)
    server: sasl-challenge 0xC0|seq ‖ chunk      → `KeyReceived(blob)`; the caller imports it
                                                   and calls `send_token(sas)`: 0x00 ‖ SAS token
    server: sasl-outcome ok                      → `SaslDone` (then the plain AMQP header)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from proton import Array

from opendps.transports.amqp.sasl import (
    FRAME_HEADER,
    HEADER_SIZE,
    MAX_SASL_FRAME_BYTES,
    SASL_CHALLENGE,
    SASL_FRAME_TYPE,
    SASL_HEADER,
    SASL_INIT,
    SASL_MECHANISMS,
    SASL_OUTCOME,
    SASL_RESPONSE,
    SaslCode,
    Symbol,
    decode_frame_body,
    encode_frame,
)
from opendps.transports.amqp.tpm_sasl import CHUNK, LAST_CHUNK, SEQUENCE_MASK, TPM

# The mechanism's name and control bytes are the server's (transports/amqp/tpm_sasl.py):
# bit 7 set on every key chunk, bit 6 on the last, the sequence number in the low two bits.
TPM_MECHANISM = TPM
CHUNK_FLAG = CHUNK
FINAL_CHUNK_FLAG = LAST_CHUNK
# A blob is ~766 bytes in 470-byte chunks; anything far beyond is a broken server.
MAX_KEY_BYTES = 8192


@dataclass(frozen=True, slots=True)
class KeyReceived:
    """The whole `authenticationKey` arrived: import it, then `send_token`."""

    blob: bytes


@dataclass(frozen=True, slots=True)
class SaslDone:
    """sasl-outcome ok. `remainder` is what the server sent after it (AMQP bytes, if any)."""

    remainder: bytes


@dataclass(frozen=True, slots=True)
class SaslRefused:
    reason: str


TpmSaslEvent = KeyReceived | SaslDone | SaslRefused


class _State(Enum):
    HEADER = auto()
    MECHANISMS = auto()
    NONCE_CHALLENGE = auto()  # the single 0x00 challenge after sasl-init
    KEY_CHUNKS = auto()
    IMPORTING = auto()  # waiting for the caller's send_token
    OUTCOME = auto()
    DONE = auto()


class TpmSaslClient:
    """Feed bytes from the server to `receive_data`; send what `data_to_send` returns."""

    def __init__(
        self, id_scope: str, registration_id: str, endorsement_key: bytes, storage_root_key: bytes
    ) -> None:
        self._id_scope = id_scope
        self._registration_id = registration_id
        self._endorsement_key = endorsement_key
        self._storage_root_key = storage_root_key
        self._state = _State.HEADER
        self._buffer = bytearray()
        self._outbound = bytearray(SASL_HEADER)
        self._key = bytearray()
        self._chunks = 0

    def data_to_send(self) -> bytes:
        out = bytes(self._outbound)
        self._outbound.clear()
        return out

    def receive_data(self, data: bytes) -> list[TpmSaslEvent]:
        if self._state is _State.DONE:
            return []
        self._buffer += data
        events: list[TpmSaslEvent] = []
        if self._state is _State.HEADER:
            if len(self._buffer) < HEADER_SIZE:
                return events
            if bytes(self._buffer[:HEADER_SIZE]) != SASL_HEADER:
                return [self._refuse("the server does not speak SASL")]
            del self._buffer[:HEADER_SIZE]
            self._state = _State.MECHANISMS
        while self._state is not _State.DONE:
            frame = self._next_frame()
            if frame is None:
                break
            if isinstance(frame, SaslRefused):
                return [*events, frame]
            event = self._handle(*frame)
            if event is not None:
                events.append(event)
        return events

    def send_token(self, sas_token: str) -> None:
        """Answer the final key chunk with the SAS token signed by the imported key."""
        if self._state is not _State.IMPORTING:
            raise RuntimeError("send_token before the whole key arrived")
        self._outbound += sasl_frame(SASL_RESPONSE, [b"\x00" + sas_token.encode("utf-8")])
        self._state = _State.OUTCOME

    # -- internals ---------------------------------------------------------------------------

    def _handle(self, descriptor: int, fields: list[object]) -> TpmSaslEvent | None:
        if descriptor == SASL_OUTCOME:
            return self._on_outcome(fields)
        if descriptor == SASL_MECHANISMS and self._state is _State.MECHANISMS:
            return self._on_mechanisms(fields)
        if descriptor == SASL_CHALLENGE and self._state is _State.NONCE_CHALLENGE:
            self._outbound += sasl_frame(SASL_RESPONSE, [b"\x00" + self._storage_root_key])
            self._state = _State.KEY_CHUNKS
            return None
        if descriptor == SASL_CHALLENGE and self._state is _State.KEY_CHUNKS:
            return self._on_chunk(_binary(fields, 0))
        return self._refuse(f"unexpected SASL frame {descriptor:#x} in state {self._state.name}")

    def _on_mechanisms(self, fields: list[object]) -> TpmSaslEvent | None:
        offered = fields[0] if fields else None
        # sasl-server-mechanisms is a multiple symbol: an array, or one bare symbol.
        names = offered.elements if isinstance(offered, Array) else [offered]
        if TPM_MECHANISM not in [str(name) for name in names if name is not None]:
            return self._refuse("the server does not offer the TPM SASL mechanism")
        initial = b"\x00".join(
            (
                b"",
                self._id_scope.encode("utf-8"),
                self._registration_id.encode("utf-8"),
                self._endorsement_key,
            )
        )
        hostname = f"{self._id_scope}/registrations/{self._registration_id}"
        self._outbound += sasl_init_frame(TPM_MECHANISM, initial, hostname)
        self._state = _State.NONCE_CHALLENGE
        return None

    def _on_chunk(self, challenge: bytes) -> TpmSaslEvent | None:
        if not challenge or not challenge[0] & CHUNK_FLAG:
            return self._refuse("a key chunk without its control byte")
        control = challenge[0]
        if control & SEQUENCE_MASK != self._chunks & SEQUENCE_MASK:
            return self._refuse(f"key chunk {control & SEQUENCE_MASK} out of sequence")
        self._chunks += 1
        self._key += challenge[1:]
        if len(self._key) > MAX_KEY_BYTES:
            return self._refuse(f"the authenticationKey exceeds {MAX_KEY_BYTES} bytes")
        if not control & FINAL_CHUNK_FLAG:
            self._outbound += sasl_frame(SASL_RESPONSE, [b"\x00"])
            return None
        self._state = _State.IMPORTING
        return KeyReceived(bytes(self._key))

    def _on_outcome(self, fields: list[object]) -> TpmSaslEvent:
        code = fields[0] if fields else None
        token_sent = self._state is _State.OUTCOME
        self._state = _State.DONE
        if code == SaslCode.OK and token_sent:
            remainder = bytes(self._buffer)
            self._buffer.clear()
            return SaslDone(remainder)
        if code == SaslCode.OK:
            return SaslRefused("the server accepted SASL before the TPM exchange ended")
        name = str(code)
        if isinstance(code, int) and code in set(SaslCode):
            name = SaslCode(code).name.lower()
        return SaslRefused(f"the server ended SASL with outcome {name}")

    def _next_frame(self) -> tuple[int, list[object]] | SaslRefused | None:
        if len(self._buffer) < FRAME_HEADER.size:
            return None
        size, doff, frame_type, _channel = FRAME_HEADER.unpack_from(self._buffer)
        if frame_type != SASL_FRAME_TYPE or doff < 2 or size < doff * 4:
            return self._refuse("malformed SASL frame header")
        if size > MAX_SASL_FRAME_BYTES:
            return self._refuse(f"SASL frame of {size} bytes exceeds {MAX_SASL_FRAME_BYTES}")
        if len(self._buffer) < size:
            return None
        body = bytes(self._buffer[doff * 4 : size])
        del self._buffer[:size]
        decoded = decode_frame_body(body)
        if decoded is None:
            return self._refuse("undecodable SASL frame")
        return decoded

    def _refuse(self, reason: str) -> SaslRefused:
        self._state = _State.DONE
        return SaslRefused(reason)


# -- codec ----------------------------------------------------------------------------------


def sasl_init_frame(mechanism: str, initial_response: bytes, hostname: str) -> bytes:
    """sasl-init (AMQP 1.0 §5.3.3.2): mechanism symbol, initial-response binary, hostname."""
    return encode_frame(SASL_INIT, [Symbol(mechanism), initial_response, hostname])


def sasl_frame(descriptor: int, binaries: list[bytes]) -> bytes:
    """A SASL frame whose fields are all binary (sasl-response, sasl-challenge)."""
    return encode_frame(descriptor, list(binaries))


def _binary(fields: list[object], index: int) -> bytes:
    value = fields[index] if index < len(fields) else None
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""
