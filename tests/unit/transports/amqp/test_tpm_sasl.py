"""The TPM SASL mechanism (protocol.md §4.4) in the sans-I/O driver: SASL frames in (encoded by
proton's codec), events and frames out, then the AMQP connection with proton's own client."""

from __future__ import annotations

import pytest
from proton import Message

from opendps.transports.amqp.driver import (
    AmqpServerConnection,
    Authenticated,
    ConnectionFailed,
    DriverEvent,
    RequestReceived,
    TpmKeyRequested,
    TpmTokenPresented,
)
from opendps.transports.amqp.sasl import (
    SASL_HEADER,
    SASL_INIT,
    SaslCode,
    SaslIdentity,
)
from opendps.transports.amqp.tpm_sasl import TPM, TpmKeys, TpmSaslExchange

from .pair import ProtonClient, pump
from .sasl_frames import (
    BLOB,
    ENDORSEMENT_KEY,
    ID_SCOPE,
    REGISTRATION_ID,
    STORAGE_ROOT_KEY,
    TOKEN,
    ServerFrame,
    ServerFrames,
    client_frame,
    response,
    tpm_init,
    tpm_init_raw,
)

USERNAME = f"{ID_SCOPE}/registrations/{REGISTRATION_ID}"
KEYS = TpmKeys(ID_SCOPE, REGISTRATION_ID, ENDORSEMENT_KEY, STORAGE_ROOT_KEY)


class TpmServer:
    """The server driver with the client's view of what it sent."""

    def __init__(self) -> None:
        self.driver = AmqpServerConnection()
        self.frames = ServerFrames()

    def send(self, data: bytes) -> tuple[list[DriverEvent], list[ServerFrame]]:
        events = self.driver.receive_data(data)
        return events, self.sent()

    def sent(self) -> list[ServerFrame]:
        return self.frames.feed(self.driver.data_to_send())

    def until_key_requested(self) -> None:
        self.send(SASL_HEADER + tpm_init())
        events, _frames = self.send(response(b"\x00" + STORAGE_ROOT_KEY))
        assert events == [TpmKeyRequested(KEYS)]

    def until_token_presented(self) -> None:
        self.until_key_requested()
        self.driver.tpm_authentication_key(BLOB)
        self.send(response(b"\x00"))
        events, _frames = self.send(response(b"\x00" + TOKEN.encode()))
        assert events == [TpmTokenPresented(ID_SCOPE, REGISTRATION_ID, TOKEN)]


def refused(server: TpmServer, events: list[DriverEvent], frames: list[ServerFrame]) -> int:
    """The outcome code of a refused exchange, after checking that it closed the connection."""
    assert [type(event) for event in events] == [ConnectionFailed]
    assert server.driver.ended and server.driver.identity is None
    [outcome] = frames
    return outcome.outcome


# -- the happy path, step by step (protocol.md §4.4) ----------------------------------------


def test_tpm_is_advertised_with_plain_and_external() -> None:
    server = TpmServer()

    _events, [mechanisms] = server.send(SASL_HEADER)

    assert mechanisms.mechanisms == ["PLAIN", "EXTERNAL", TPM]


def test_init_is_answered_with_a_single_zero_byte_challenge_and_no_event() -> None:
    server = TpmServer()

    events, [_mechanisms, challenge] = server.send(SASL_HEADER + tpm_init())

    assert events == []
    assert challenge.challenge == b"\x00"


def test_srk_response_asks_the_caller_for_the_key_and_sends_nothing_meanwhile() -> None:
    server = TpmServer()
    server.send(SASL_HEADER + tpm_init())

    events, frames = server.send(response(b"\x00" + STORAGE_ROOT_KEY))

    assert events == [TpmKeyRequested(KEYS)]
    assert frames == []


def test_a_766_byte_key_goes_out_in_two_chunks_each_after_the_clients_ack() -> None:
    server = TpmServer()
    server.until_key_requested()

    assert server.driver.tpm_authentication_key(BLOB) == []
    [first] = server.sent()
    events, [second] = server.send(response(b"\x00"))

    assert events == []
    assert first.challenge == b"\x80" + BLOB[:470]
    assert second.challenge == b"\xc1" + BLOB[470:]
    assert len(second.challenge) == 1 + 296


def test_a_key_that_fits_one_chunk_is_sent_as_the_last_chunk_at_once() -> None:
    server = TpmServer()
    server.until_key_requested()

    server.driver.tpm_authentication_key(BLOB[:470])

    [only] = server.sent()
    assert only.challenge == b"\xc0" + BLOB[:470]


def test_a_key_of_four_full_chunks_counts_the_sequence_in_the_low_two_bits() -> None:
    server = TpmServer()
    server.until_key_requested()
    blob = bytes(range(256)) * 7 + bytes(88)  # 1880 bytes = 4 × 470

    server.driver.tpm_authentication_key(blob)
    controls = [server.sent()[0].challenge[0]]
    for _ in range(3):
        _events, [chunk] = server.send(response(b"\x00"))
        controls.append(chunk.challenge[0])

    assert controls == [0x80, 0x81, 0x82, 0xC3]


def test_token_response_asks_the_caller_to_check_it_and_hides_it_from_repr() -> None:
    server = TpmServer()
    server.until_key_requested()
    server.driver.tpm_authentication_key(BLOB)
    server.send(response(b"\x00"))

    events, frames = server.send(response(b"\x00" + TOKEN.encode()))

    assert events == [TpmTokenPresented(ID_SCOPE, REGISTRATION_ID, TOKEN)]
    assert frames == []
    assert TOKEN not in repr(events[0])


def test_accepting_the_token_succeeds_with_the_token_as_the_sas_password() -> None:
    server = TpmServer()
    server.until_token_presented()

    events = server.driver.tpm_accept()

    identity = SaslIdentity(TPM, USERNAME, TOKEN)
    assert events == [Authenticated(identity)]
    assert server.driver.identity == identity
    [outcome] = server.sent()
    assert outcome.outcome == SaslCode.OK


def test_after_tpm_sasl_the_amqp_connection_opens_and_carries_requests() -> None:
    server = TpmServer()
    server.until_token_presented()
    server.driver.tpm_accept()
    server.sent()
    client = ProtonClient()  # SASL is done: the client goes on with the plain AMQP header
    sender, _receiver = client.open_links(USERNAME)
    pump(client, server.driver)
    client.send(sender, Message(body=b"{}", inferred=True, correlation_id="c1"), "t1")

    events = pump(client, server.driver)

    assert server.driver.opened and sender.credit > 0
    [request] = [event for event in events if isinstance(event, RequestReceived)]
    assert request.address.registration_id == REGISTRATION_ID


def test_an_amqp_header_pipelined_after_the_token_waits_for_the_outcome() -> None:
    server = TpmServer()
    server.until_key_requested()
    server.driver.tpm_authentication_key(BLOB)
    server.send(response(b"\x00"))
    client = ProtonClient()
    client.open_links(USERNAME)

    server.send(response(b"\x00" + TOKEN.encode()) + client.drain())
    events = server.driver.tpm_accept()

    assert [type(event) for event in events] == [Authenticated]
    assert server.driver.opened


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "initial_response",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00", id="control byte only"),
        pytest.param(b"0ne1\x00dev\x00ek", id="no control byte"),
        pytest.param(b"\x80\x000ne1\x00dev\x00ek", id="first of a chunked init"),
        pytest.param(b"\xc0\x000ne1\x00dev\x00ek", id="last of a chunked init"),
        pytest.param(b"\x000ne1\x00dev", id="no endorsement key"),
        pytest.param(b"\x000ne1\x00dev\x00", id="empty endorsement key"),
        pytest.param(b"\x00\x00dev\x00ek", id="empty id scope"),
        pytest.param(b"\x000ne1\x00\x00ek", id="empty registration id"),
        pytest.param(b"\x000ne1\x00d\xc3\xa9v\x00ek", id="non-ascii registration id"),
        pytest.param(b"\x000ne1\x00a/b\x00ek", id="slash in registration id"),
        pytest.param(b"\x000ne1\x00a\tb\x00ek", id="control character"),
    ],
)
def test_a_malformed_init_fails_with_outcome_auth_and_closes(initial_response: bytes) -> None:
    server = TpmServer()

    events, [_mechanisms, *frames] = server.send(SASL_HEADER + tpm_init_raw(initial_response))

    assert refused(server, events, frames) == SaslCode.AUTH


def test_an_init_without_initial_response_fails() -> None:
    server = TpmServer()

    events, [_mechanisms, *frames] = server.send(SASL_HEADER + client_frame(SASL_INIT, TPM))

    assert refused(server, events, frames) == SaslCode.AUTH


@pytest.mark.parametrize(
    "srk_response",
    [b"", b"\x00", b"\x80" + STORAGE_ROOT_KEY, b"\xc0" + STORAGE_ROOT_KEY, STORAGE_ROOT_KEY],
)
def test_a_malformed_srk_response_fails_with_outcome_auth(srk_response: bytes) -> None:
    server = TpmServer()
    server.send(SASL_HEADER + tpm_init())

    events, frames = server.send(response(srk_response))

    assert refused(server, events, frames) == SaslCode.AUTH


def test_a_response_while_the_key_is_being_made_fails() -> None:
    server = TpmServer()
    server.until_key_requested()

    events, frames = server.send(response(b"\x00"))

    assert refused(server, events, frames) == SaslCode.AUTH
    assert server.driver.tpm_authentication_key(BLOB) == []  # the engine answers too late
    assert server.sent() == []


@pytest.mark.parametrize("ack", [b"", b"\x01", b"\x00\x00", b"\x00" + TOKEN.encode()])
def test_anything_but_a_zero_byte_after_a_non_final_chunk_fails(ack: bytes) -> None:
    server = TpmServer()
    server.until_key_requested()
    server.driver.tpm_authentication_key(BLOB)
    server.sent()

    events, frames = server.send(response(ack))

    assert refused(server, events, frames) == SaslCode.AUTH


@pytest.mark.parametrize("token", [b"", b"\x00", b"\x80abc", b"\x00tok\xffen"])
def test_a_malformed_token_response_fails(token: bytes) -> None:
    server = TpmServer()
    server.until_key_requested()
    server.driver.tpm_authentication_key(BLOB)
    server.send(response(b"\x00"))

    events, frames = server.send(response(token))

    assert refused(server, events, frames) == SaslCode.AUTH


def test_a_response_while_the_token_is_checked_fails() -> None:
    server = TpmServer()
    server.until_token_presented()

    events, frames = server.send(response(b"\x00"))

    assert refused(server, events, frames) == SaslCode.AUTH
    assert server.driver.tpm_accept() == []


def test_a_second_init_fails() -> None:
    server = TpmServer()
    server.send(SASL_HEADER + tpm_init())

    events, frames = server.send(tpm_init())

    assert refused(server, events, frames) == SaslCode.AUTH


@pytest.mark.parametrize("code", [SaslCode.AUTH, SaslCode.SYS, SaslCode.SYS_TEMP])
def test_the_caller_fails_the_exchange_with_the_outcome_it_chooses(code: SaslCode) -> None:
    server = TpmServer()
    server.until_key_requested()

    events = server.driver.sasl_fail("engine said no", code)

    assert refused(server, events, server.sent()) == code


def test_a_key_too_long_for_four_chunks_is_an_internal_error() -> None:
    server = TpmServer()
    server.until_key_requested()

    events = server.driver.tpm_authentication_key(bytes(4 * 470 + 1))

    assert refused(server, events, server.sent()) == SaslCode.SYS


def test_an_empty_key_is_an_internal_error() -> None:
    server = TpmServer()
    server.until_key_requested()

    events = server.driver.tpm_authentication_key(b"")

    assert refused(server, events, server.sent()) == SaslCode.SYS


def test_accepting_before_a_token_was_checked_fails_instead_of_succeeding() -> None:
    server = TpmServer()
    server.until_key_requested()

    events = server.driver.tpm_accept()

    assert refused(server, events, server.sent()) == SaslCode.SYS


def test_plain_clients_are_unaffected_by_the_tpm_mechanism() -> None:
    server = AmqpServerConnection()
    client = ProtonClient(user=USERNAME, password=TOKEN)
    client.open_links(USERNAME)

    pump(client, server)

    assert server.identity == SaslIdentity("PLAIN", USERNAME, TOKEN)
    assert server.opened


# -- the mechanism object on its own -----------------------------------------------------------


def test_exchange_refuses_a_key_nobody_asked_for() -> None:
    exchange = TpmSaslExchange()

    with pytest.raises(ValueError, match="no authentication key"):
        exchange.key_ready(BLOB)
