"""The SASL server layer: frames, PLAIN, interactive mechanisms, failures."""

from __future__ import annotations

import pytest
from proton import Data

from opendps.transports.amqp.sasl import (
    ANONYMOUS,
    EXTERNAL,
    FRAME_HEADER,
    PLAIN,
    SASL_HEADER,
    SASL_INIT,
    SASL_RESPONSE,
    SaslFailed,
    SaslIdentity,
    SaslInitReceived,
    SaslResponseReceived,
    SaslServer,
    SaslSucceeded,
    parse_plain,
)

TOKEN = "SharedAccessSignature sr=0ne1%2Fregistrations%2Fd&sig=x&se=1"


def frame(descriptor: int, *fields: object) -> bytes:
    """A client SASL frame, encoded with proton's codec (independent of ours)."""
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
            data.put_symbol(str(value))
    data.exit()
    data.exit()
    body = bytes(data.encode())
    return FRAME_HEADER.pack(8 + len(body), 2, 1, 0) + body


def outcome_code(sent: bytes) -> int:
    """The code of the last sasl-outcome frame in `sent`."""
    body = sent[sent.rindex(b"\x00\x53\x44") :]
    decoded = Data()
    decoded.decode(body)
    decoded.next()
    value = decoded.get_object()
    return int(value.value[0])  # type: ignore[union-attr]


def test_header_is_answered_with_header_and_the_advertised_mechanisms() -> None:
    server = SaslServer()

    assert server.receive_data(SASL_HEADER) == []

    sent = server.data_to_send()
    assert sent.startswith(SASL_HEADER)
    assert b"PLAIN" in sent and b"EXTERNAL" in sent


def test_plain_succeeds_with_username_and_password() -> None:
    server = SaslServer()
    init = frame(SASL_INIT, PLAIN, b"\x000ne1/registrations/d\x00" + TOKEN.encode())

    [event] = server.receive_data(SASL_HEADER + init)

    assert event == SaslSucceeded(SaslIdentity(PLAIN, "0ne1/registrations/d", TOKEN))
    assert outcome_code(server.data_to_send()) == 0
    assert server.done


def test_bytes_after_the_last_frame_are_kept_for_the_amqp_layer() -> None:
    server = SaslServer()
    init = frame(SASL_INIT, EXTERNAL)

    server.receive_data(SASL_HEADER + init + b"AMQP\x00\x01")
    server.receive_data(b"\x00\x00")

    assert server.remainder == b"AMQP\x00\x01\x00\x00"


@pytest.mark.parametrize("mechanism", [EXTERNAL, ANONYMOUS])
def test_external_and_anonymous_succeed_without_a_password(mechanism: str) -> None:
    server = SaslServer()

    [event] = server.receive_data(SASL_HEADER + frame(SASL_INIT, mechanism))

    assert event == SaslSucceeded(SaslIdentity(mechanism))


def test_unsupported_mechanism_fails_with_outcome_auth() -> None:
    server = SaslServer()

    [event] = server.receive_data(SASL_HEADER + frame(SASL_INIT, "SCRAM-SHA-256", b"x"))

    assert isinstance(event, SaslFailed)
    assert outcome_code(server.data_to_send()) == 1


def test_malformed_plain_response_fails() -> None:
    server = SaslServer()

    [event] = server.receive_data(SASL_HEADER + frame(SASL_INIT, PLAIN, b"no-separators"))

    assert isinstance(event, SaslFailed)


def test_interactive_mechanism_reports_init_and_responses_and_waits_for_the_caller() -> None:
    server = SaslServer(("PLAIN", "TPM"), interactive_mechanisms=("TPM",))
    events = server.receive_data(SASL_HEADER + frame(SASL_INIT, "TPM", b"\x00scope\x00reg\x00ek"))
    assert events == [SaslInitReceived("TPM", b"\x00scope\x00reg\x00ek", None)]
    server.data_to_send()

    server.challenge(b"\x00")
    assert server.data_to_send().endswith(b"\xa0\x01\x00")  # binary of one byte: 0x00
    assert server.receive_data(frame(SASL_RESPONSE, b"\x00srk")) == [
        SaslResponseReceived(b"\x00srk")
    ]

    assert server.succeed(SaslIdentity("TPM", "reg")).identity.mechanism == "TPM"
    assert outcome_code(server.data_to_send()) == 0


def test_a_response_frame_outside_an_interactive_exchange_fails() -> None:
    server = SaslServer()

    [event] = server.receive_data(SASL_HEADER + frame(SASL_RESPONSE, b"x"))

    assert isinstance(event, SaslFailed)


def test_oversized_frame_fails_before_it_is_buffered() -> None:
    server = SaslServer(max_frame_bytes=512)

    [event] = server.receive_data(SASL_HEADER + FRAME_HEADER.pack(1 << 20, 2, 1, 0))

    assert isinstance(event, SaslFailed) and "exceeds" in event.reason


def test_a_non_sasl_header_is_answered_with_ours_and_fails() -> None:
    server = SaslServer()

    [event] = server.receive_data(b"AMQP\x00\x01\x00\x00")

    assert isinstance(event, SaslFailed)
    assert server.data_to_send() == SASL_HEADER


def test_every_proper_prefix_of_a_valid_exchange_waits_for_more() -> None:
    stream = SASL_HEADER + frame(SASL_INIT, PLAIN, b"\x00user\x00pw")
    for cut in range(len(stream)):
        assert SaslServer().receive_data(stream[:cut]) == []


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (b"\x00user\x00pw", SaslIdentity(PLAIN, "user", "pw")),
        (b"authz\x00user\x00pw", SaslIdentity(PLAIN, "user", "pw")),
        (b"\x00user\x00", SaslIdentity(PLAIN, "user", "")),
        (b"\x00\x00pw", None),
        (b"user\x00pw", None),
        (b"\x00us\xffer\x00pw", None),
        (b"\x00a\x00b\x00c", None),
    ],
)
def test_plain_responses_are_parsed_per_rfc_4616(
    response: bytes, expected: SaslIdentity | None
) -> None:
    assert parse_plain(response) == expected
