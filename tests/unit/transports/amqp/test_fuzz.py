"""Arbitrary bytes never raise out of the driver: they yield our events or nothing
(STYLE §3.4 habit 4, h11's fuzz rule)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from opendps.transports.amqp.driver import (
    AmqpServerConnection,
    Authenticated,
    ConnectionFailed,
    RequestReceived,
    TpmKeyRequested,
    TpmTokenPresented,
)
from opendps.transports.amqp.sasl import AMQP_HEADER, SASL_HEADER

from .sasl_frames import STORAGE_ROOT_KEY, response, tpm_init

OUR_EVENTS = (Authenticated, ConnectionFailed, RequestReceived, TpmKeyRequested, TpmTokenPresented)


def feed_all(chunks: list[bytes]) -> AmqpServerConnection:
    server = AmqpServerConnection()
    for chunk in chunks:
        events = server.receive_data(chunk)
        assert all(isinstance(event, OUR_EVENTS) for event in events)
        server.data_to_send()
        server.tick(1.0)
    return server


@given(st.lists(st.binary(max_size=300), max_size=6))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    feed_all(chunks)


@given(st.sampled_from([SASL_HEADER, AMQP_HEADER]), st.lists(st.binary(max_size=300), max_size=6))
def test_arbitrary_bytes_after_a_valid_header_never_raise(
    header: bytes, chunks: list[bytes]
) -> None:
    feed_all([header, *chunks])


@given(st.lists(st.binary(max_size=600), max_size=6), st.binary(max_size=2000))
def test_arbitrary_tpm_sasl_responses_and_keys_never_raise(
    responses: list[bytes], blob: bytes
) -> None:
    server = feed_all([SASL_HEADER + tpm_init(), response(b"\x00" + STORAGE_ROOT_KEY)])
    server.tpm_authentication_key(blob)
    server.data_to_send()
    for data in responses:
        events = server.receive_data(response(data))
        assert all(isinstance(event, OUR_EVENTS) for event in events)
        server.data_to_send()
    server.tpm_accept()
    server.data_to_send()


@given(st.binary(min_size=1, max_size=200))
def test_a_frame_header_followed_by_garbage_closes_or_waits(body: bytes) -> None:
    frame = (8 + len(body)).to_bytes(4, "big") + b"\x02\x00\x00\x00" + body
    server = feed_all([AMQP_HEADER, frame])
    # Either the garbage was a (harmless) frame, or the connection ends with a CLOSE sent.
    assert server.ended or not server.opened


def test_every_proper_prefix_of_a_client_stream_waits_for_more_without_failing() -> None:
    from proton import Message

    from .pair import ADDRESS, ProtonClient, pump

    # Record what a real client sends: SASL, OPEN, BEGIN, two ATTACHes and a request.
    recorder = ProtonClient(user=ADDRESS, password="token")
    sender, _receiver = recorder.open_links()
    server = AmqpServerConnection()
    stream = bytearray()
    for _ in range(10):
        out = recorder.drain()
        stream += out
        server.receive_data(out)
        recorder.feed(server.data_to_send())
    recorder.send(sender, Message(body=b"{}", inferred=True), "t")
    stream += recorder.drain()
    pump(recorder, server)

    for cut in range(len(stream)):
        events = AmqpServerConnection().receive_data(bytes(stream[:cut]))
        assert not any(isinstance(event, ConnectionFailed) for event in events), cut
