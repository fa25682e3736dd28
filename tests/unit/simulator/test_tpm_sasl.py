"""The simulator's TPM SASL client (protocol.md §4.4) against the server's own SASL core.

Both sides are sans-I/O, so a test wires them together with a fake wire: the server side is
`opendps.transports.amqp.sasl.SaslServer` with `TPM` as an interactive mechanism, scripted here
the way DPS answers (a 0x00 challenge, the key in control-byte chunks, then the outcome).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from opendps.simulator.tpm_sasl import (
    KeyReceived,
    SaslDone,
    SaslRefused,
    TpmSaslClient,
    TpmSaslEvent,
)
from opendps.transports.amqp.sasl import (
    AMQP_HEADER,
    PLAIN,
    SaslIdentity,
    SaslInitReceived,
    SaslResponseReceived,
    SaslServer,
    SaslSucceeded,
)

SCOPE = "0ne00000ABC"
REGISTRATION_ID = "tpm-device-1"
EK = b"\x01\x3a" + b"E" * 314
SRK = b"\x01\x1a" + b"S" * 282
BLOB = bytes(range(256)) * 3  # 768 bytes: two 470-byte chunks
TOKEN = "SharedAccessSignature sr=x&sig=y&se=1&skn=registration"


@dataclass
class ScriptedDps:
    """The DPS side of the exchange, recording what the device sent."""

    blob: bytes = BLOB
    chunk_bytes: int = 470
    sequence_of: list[int] | None = None  # override the control bytes' sequence numbers
    accept: bool = True
    server: SaslServer = field(
        default_factory=lambda: SaslServer((PLAIN, "TPM"), interactive_mechanisms=("TPM",))
    )
    init: SaslInitReceived | None = None
    responses: list[bytes] = field(default_factory=list)
    outcome: SaslSucceeded | None = None
    _chunks: list[bytes] = field(default_factory=list)

    def receive(self, data: bytes) -> bytes:
        for event in self.server.receive_data(data):
            if isinstance(event, SaslInitReceived):
                self.init = event
                self.server.challenge(b"\x00")
            elif isinstance(event, SaslResponseReceived):
                self.responses.append(event.response)
                self._answer(event.response)
            elif isinstance(event, SaslSucceeded):
                self.outcome = event
        return self.server.data_to_send()

    def _answer(self, response: bytes) -> None:
        if len(self.responses) == 1:  # 0x00 ‖ SRK: send the key
            self._chunks = self._split()
            self.server.challenge(self._chunks.pop(0))
        elif self._chunks:
            self.server.challenge(self._chunks.pop(0))
        elif self.accept:
            self.outcome = self.server.succeed(self.server_identity())
        else:
            self.server.fail("bad token")

    def _split(self) -> list[bytes]:
        pieces = [
            self.blob[start : start + self.chunk_bytes]
            for start in range(0, len(self.blob), self.chunk_bytes)
        ]
        sequence = self.sequence_of or list(range(len(pieces)))
        return [
            bytes([(0xC0 if index == len(pieces) - 1 else 0x80) | (sequence[index] & 3)]) + piece
            for index, piece in enumerate(pieces)
        ]

    @staticmethod
    def server_identity() -> SaslIdentity:
        return SaslIdentity("TPM", f"{SCOPE}/registrations/{REGISTRATION_ID}")


def run(dps: ScriptedDps, *, after_outcome: bytes = b"") -> tuple[list[TpmSaslEvent], bytes]:
    """Drive the exchange to its end; answer a received key with TOKEN. Returns the client's
    events and what the server received after SASL (its `remainder`)."""
    client = TpmSaslClient(SCOPE, REGISTRATION_ID, EK, SRK)
    events: list[TpmSaslEvent] = []
    to_server = client.data_to_send()
    for _ in range(20):
        to_client = dps.receive(to_server)
        if dps.server.done:
            to_client += after_outcome
        new = client.receive_data(to_client)
        events += new
        for event in new:
            if isinstance(event, KeyReceived):
                client.send_token(TOKEN)
        if any(isinstance(event, SaslDone | SaslRefused) for event in new):
            break
        to_server = client.data_to_send()
    return events, dps.server.remainder


def test_a_full_exchange_delivers_the_key_and_ends_in_success() -> None:
    dps = ScriptedDps()
    events, _ = run(dps, after_outcome=AMQP_HEADER)
    assert events == [KeyReceived(BLOB), SaslDone(AMQP_HEADER)]
    assert dps.init is not None
    assert dps.init.mechanism == "TPM"
    assert dps.init.initial_response == b"\x00" + SCOPE.encode() + b"\x00tpm-device-1\x00" + EK
    assert dps.init.hostname == f"{SCOPE}/registrations/{REGISTRATION_ID}"
    # SRK, a 0x00 for the one non-final chunk, then the token after the final one.
    assert dps.responses == [b"\x00" + SRK, b"\x00", b"\x00" + TOKEN.encode()]
    assert dps.outcome is not None


@pytest.mark.parametrize("chunk_bytes", [len(BLOB), 200])
def test_the_key_is_reassembled_from_one_or_several_chunks(chunk_bytes: int) -> None:
    dps = ScriptedDps(chunk_bytes=chunk_bytes)
    events, _ = run(dps)
    assert events[0] == KeyReceived(BLOB)
    assert dps.responses[1:-1] == [b"\x00"] * (-(-len(BLOB) // chunk_bytes) - 1)


def test_the_sequence_number_wraps_in_its_two_bits() -> None:
    dps = ScriptedDps(chunk_bytes=100)  # 8 chunks: 0,1,2,3,0,1,2,3
    events, _ = run(dps)
    assert events == [KeyReceived(BLOB), SaslDone(b"")]


def test_a_chunk_out_of_sequence_is_refused() -> None:
    events, _ = run(ScriptedDps(sequence_of=[0, 2]))
    assert events == [SaslRefused("key chunk 2 out of sequence")]


def test_a_refused_token_is_reported_with_the_outcome_code() -> None:
    events, _ = run(ScriptedDps(accept=False))
    assert events == [KeyReceived(BLOB), SaslRefused("the server ended SASL with outcome auth")]


def test_a_server_without_the_tpm_mechanism_is_refused() -> None:
    client = TpmSaslClient(SCOPE, REGISTRATION_ID, EK, SRK)
    server = SaslServer((PLAIN,))
    server.receive_data(client.data_to_send())
    events = client.receive_data(server.data_to_send())
    assert events == [SaslRefused("the server does not offer the TPM SASL mechanism")]
    assert client.data_to_send() == b""  # no sasl-init went out


def test_a_server_that_does_not_speak_sasl_is_refused() -> None:
    client = TpmSaslClient(SCOPE, REGISTRATION_ID, EK, SRK)
    assert client.receive_data(AMQP_HEADER) == [SaslRefused("the server does not speak SASL")]


def test_bytes_split_anywhere_give_the_same_events() -> None:
    """The client buffers partial frames: feed the server's answers one byte at a time."""
    dps = ScriptedDps()
    client = TpmSaslClient(SCOPE, REGISTRATION_ID, EK, SRK)
    events: list[TpmSaslEvent] = []
    to_server = client.data_to_send()
    while not any(isinstance(event, SaslDone | SaslRefused) for event in events):
        to_client = dps.receive(to_server)
        for index in range(len(to_client)):
            new = client.receive_data(to_client[index : index + 1])
            events += new
            if any(isinstance(event, KeyReceived) for event in new):
                client.send_token(TOKEN)
        to_server = client.data_to_send()
    assert events == [KeyReceived(BLOB), SaslDone(b"")]


def test_an_early_success_is_not_taken_for_authentication() -> None:
    """A server that says ok before the key exchange ended has not checked our token."""
    client = TpmSaslClient(SCOPE, REGISTRATION_ID, EK, SRK)
    server = SaslServer(("TPM",), interactive_mechanisms=("TPM",))
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    server.succeed(ScriptedDps.server_identity())
    events = client.receive_data(server.data_to_send())
    assert events == [SaslRefused("the server accepted SASL before the TPM exchange ended")]


def test_send_token_before_the_key_is_a_programming_error() -> None:
    client = TpmSaslClient(SCOPE, REGISTRATION_ID, EK, SRK)
    with pytest.raises(RuntimeError):
        client.send_token(TOKEN)
