"""SASL frames from the client's side, encoded and decoded with proton's codec (independent of
the server's own): proton's SASL client cannot speak the custom `TPM` mechanism, so TPM tests
write its frames by hand with these."""

from __future__ import annotations

from dataclasses import dataclass

from proton import Array, Data

from opendps.transports.amqp.sasl import (
    FRAME_HEADER,
    SASL_CHALLENGE,
    SASL_HEADER,
    SASL_INIT,
    SASL_MECHANISMS,
    SASL_OUTCOME,
    SASL_RESPONSE,
)
from opendps.transports.amqp.tpm_sasl import TPM

ID_SCOPE = "0ne00000001"
REGISTRATION_ID = "tpm-dev-1"
# Public keys as opaque bytes: the SASL layer never parses them. Both hold 0x00 bytes on
# purpose (a real TPM2B_PUBLIC does), which must not end them.
ENDORSEMENT_KEY = b"\x01\x3a\x00\x01\x00\x0b" + bytes(range(256)) + b"\x00\x00ek-end"
STORAGE_ROOT_KEY = b"\x01\x1a\x00\x01\x00\x0b" + bytes(range(200)) + b"srk-end"
TOKEN = (
    "SharedAccessSignature sr=0ne00000001%2Fregistrations%2Ftpm-dev-1"
    "&sig=c2lnbmF0dXJl&se=1767225600&skn=registration"
)
# The size of a real authenticationKey (protocol.md §6.3): two chunks of 470 and 296 bytes.
BLOB = bytes((index * 7) % 251 for index in range(766))


def client_frame(descriptor: int, *fields: bytes | str) -> bytes:
    """A client SASL frame: str fields become symbols, bytes binary."""
    data = Data()
    data.put_described()
    data.enter()
    data.put_ulong(descriptor)
    data.put_list()
    data.enter()
    for value in fields:
        if isinstance(value, bytes):
            data.put_binary(value)
        else:
            data.put_symbol(value)
    data.exit()
    data.exit()
    body = bytes(data.encode())
    return FRAME_HEADER.pack(FRAME_HEADER.size + len(body), 2, 1, 0) + body


def tpm_init(
    id_scope: str = ID_SCOPE,
    registration_id: str = REGISTRATION_ID,
    endorsement_key: bytes = ENDORSEMENT_KEY,
) -> bytes:
    """The sasl-init a Node or C TPM device sends (protocol.md §4.4 step 1)."""
    initial = b"\x00" + id_scope.encode() + b"\x00" + registration_id.encode() + b"\x00"
    return tpm_init_raw(initial + endorsement_key)


def tpm_init_raw(initial_response: bytes) -> bytes:
    return client_frame(SASL_INIT, TPM, initial_response)


def response(data: bytes) -> bytes:
    return client_frame(SASL_RESPONSE, data)


@dataclass(frozen=True)
class ServerFrame:
    descriptor: int
    fields: list[object]

    @property
    def challenge(self) -> bytes:
        assert self.descriptor == SASL_CHALLENGE, f"not a challenge: {self.descriptor:#x}"
        value = self.fields[0]
        assert isinstance(value, bytes)
        return value

    @property
    def outcome(self) -> int:
        assert self.descriptor == SASL_OUTCOME, f"not an outcome: {self.descriptor:#x}"
        value = self.fields[0]
        assert isinstance(value, int)
        return value

    @property
    def mechanisms(self) -> list[str]:
        assert self.descriptor == SASL_MECHANISMS
        value = self.fields[0]
        return [str(name) for name in value.elements] if isinstance(value, Array) else [str(value)]


class ServerFrames:
    """Accumulates the server's bytes and splits them into the SASL header and frames."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.header_seen = False

    def feed(self, data: bytes) -> list[ServerFrame]:
        self.buffer += data
        frames: list[ServerFrame] = []
        if not self.header_seen:
            if len(self.buffer) < len(SASL_HEADER):
                return frames
            assert bytes(self.buffer[: len(SASL_HEADER)]) == SASL_HEADER
            del self.buffer[: len(SASL_HEADER)]
            self.header_seen = True
        while len(self.buffer) >= FRAME_HEADER.size:
            size, doff, frame_type, _channel = FRAME_HEADER.unpack_from(self.buffer)
            assert frame_type == 1, "not a SASL frame"
            if len(self.buffer) < size:
                break
            body = bytes(self.buffer[doff * 4 : size])
            del self.buffer[:size]
            frames.append(_decode(body))
        return frames


def _decode(body: bytes) -> ServerFrame:
    data = Data()
    data.decode(body)
    data.next()
    value = data.get_object()
    fields = [bytes(v) if isinstance(v, memoryview) else v for v in value.value]  # type: ignore[union-attr]
    return ServerFrame(int(value.descriptor), fields)  # type: ignore[union-attr]
