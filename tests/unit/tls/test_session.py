"""TlsSession against the standard library's `ssl` client on memory BIOs: no sockets."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL
from tests import pki as test_pki

from opendps.tls.contexts import build_server_context
from opendps.tls.session import (
    CloseNotifyReceived,
    DataReceived,
    HandshakeCompleted,
    TlsFailed,
    TlsSession,
    TlsSessionState,
    TlsStateError,
)

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3


def only_handshake(events: list) -> HandshakeCompleted:
    assert len(events) == 1 and isinstance(events[0], HandshakeCompleted), events
    return events[0]


# -- handshakes -------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "name"), [(TLS12, "TLSv1.2"), (TLS13, "TLSv1.3")], ids=str)
def test_handshake_completes_and_reports_version_cipher_and_sni(
    make_pair, client_context, version, name
):
    pair = make_pair(client_context(version=version))

    completed = only_handshake(pair.handshake())

    assert completed.tls_version == name
    assert completed.sni == "localhost"
    assert completed.cipher == pair.client.cipher()[0]
    assert pair.server.state is TlsSessionState.OPEN


def test_tls12_negotiates_an_ecdhe_cipher(make_pair, client_context):
    completed = only_handshake(make_pair(client_context(version=TLS12)).handshake())

    assert completed.cipher.startswith("ECDHE-ECDSA-")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_client_is_refused_with_tls_failed(make_pair, client_context):
    # SECLEVEL=0 lets the client's OpenSSL 3 actually offer TLS 1.1, so the server must refuse.
    pair = make_pair(client_context(version=ssl.TLSVersion.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0"))

    with pytest.raises(ssl.SSLError):
        pair.handshake()

    assert len(pair.events) == 1 and isinstance(pair.events[0], TlsFailed)
    assert "unsupported protocol" in pair.events[0].reason
    assert pair.server.state is TlsSessionState.FAILED


def test_tls12_client_offering_only_non_ecdhe_suites_is_refused(make_pair, client_context):
    pair = make_pair(client_context(version=TLS12, ciphers="AES128-GCM-SHA256:AES256-GCM-SHA384"))

    with pytest.raises(ssl.SSLError):
        pair.handshake()

    assert [type(e) for e in pair.events] == [TlsFailed]
    assert "no shared cipher" in pair.events[0].reason


def test_client_that_rejects_the_server_certificate_ends_in_tls_failed(make_pair, pki):
    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    untrusting.load_verify_locations(cadata=test_pki.pem(pki.device_root.certificate).decode())
    pair = make_pair(untrusting)

    with pytest.raises(ssl.SSLCertVerificationError):
        pair.handshake()
    pair.client_to_server()  # the client's alert

    assert isinstance(pair.events[-1], TlsFailed)
    assert "unknown ca" in pair.events[-1].reason


def test_client_without_sni_gets_none(make_pair, pki):
    no_sni = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_sni.check_hostname = False
    no_sni.load_verify_locations(pki.server_ca_path)

    completed = only_handshake(make_pair(no_sni, server_hostname=None).handshake())

    assert completed.sni is None


# -- client certificates ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=str)
def test_client_without_certificate_gets_an_empty_chain(make_pair, client_context, version):
    completed = only_handshake(make_pair(client_context(version=version)).handshake())

    assert completed.peer_chain == ()


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=str)
def test_self_signed_certificate_of_unknown_issuer_completes_the_handshake(
    make_pair, client_context, pki, version
):
    identity = pki.self_signed_device
    pair = make_pair(client_context(identity=identity, version=version))

    completed = only_handshake(pair.handshake())

    assert completed.peer_chain == (identity.certificate,)


def test_expired_client_certificate_completes_the_handshake(make_pair, client_context, pki):
    identity = pki.expired_device
    pair = make_pair(client_context(identity=identity))

    completed = only_handshake(pair.handshake())

    assert completed.peer_chain == (identity.certificate,)


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=str)
def test_leaf_and_intermediate_are_both_visible_leaf_first(make_pair, client_context, pki, version):
    pair = make_pair(client_context(identity=pki.device, version=version))

    completed = only_handshake(pair.handshake())

    assert completed.peer_chain == (pki.device.certificate, pki.device_intermediate.certificate)


def test_chain_is_reported_exactly_as_sent_even_when_out_of_order(make_pair, client_context, pki):
    # Leaf, then an unrelated certificate, then the real intermediate: not a valid path, but
    # what the device sent is what attestation must see.
    odd = test_pki.Identity(
        pki.device.certificate,
        pki.device.key,
        (pki.self_signed_device.certificate, pki.device_intermediate.certificate),
    )
    pair = make_pair(client_context(identity=odd))

    completed = only_handshake(pair.handshake())

    assert completed.peer_chain == odd.sent_chain()


def test_server_requests_a_certificate_without_naming_any_ca(server_context, pki):
    # stdlib ssl cannot show the CertificateRequest, so this peer is a pyOpenSSL client.
    client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_ctx.use_certificate_chain_file(str(pki.client_files(pki.device, "ca-list-device")[0]))
    client_ctx.use_privatekey_file(str(pki.directory / "ca-list-device.key"))
    client = SSL.Connection(client_ctx, None)
    client.set_connect_state()
    server = TlsSession(server_context)
    events = []
    for _ in range(10):
        try:
            client.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            events += server.receive_data(client.bio_read(65536))
        except SSL.WantReadError:
            pass
        if outgoing := server.data_to_send():
            client.bio_write(outgoing)

    assert only_handshake(events).peer_chain[0] == pki.device.certificate
    assert client.get_client_ca_list() == []


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=str)
def test_resumed_session_still_reports_the_full_chain_and_sni(
    make_pair, client_context, pki, version
):
    # Stateless tickets would carry only the leaf; the server-side cache keeps the chain.
    server_ctx = build_server_context(pki.server_cert_path, pki.server_key_path)
    client_ctx = client_context(identity=pki.device, version=version)
    first = make_pair(client_ctx, server=server_ctx)
    only_handshake(first.handshake())
    first.client_receive()  # takes in the TLS 1.3 session tickets
    first.server.close()  # a cleanly closed session stays resumable

    second = make_pair(client_ctx, server=server_ctx, session=first.client.session)
    completed = only_handshake(second.handshake())

    assert second.client.session_reused
    assert completed.peer_chain == (pki.device.certificate, pki.device_intermediate.certificate)
    assert completed.sni == "localhost"


# -- application data and closing -------------------------------------------------------------


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=str)
def test_application_data_flows_both_ways(make_pair, client_context, version):
    pair = make_pair(client_context(version=version))
    pair.handshake()

    assert pair.client_send(b"ping") == [DataReceived(b"ping")]
    pair.server_send(b"pong")
    assert pair.client_receive() == b"pong"


def test_data_in_many_records_arrives_as_one_event(make_pair, client_context):
    pair = make_pair(client_context(version=TLS13))
    pair.handshake()
    payload = bytes(range(256)) * 1024  # 256 KiB: 16 records

    for offset in range(0, len(payload), 16384):
        pair.client.write(payload[offset : offset + 16384])

    assert pair.client_to_server() == [DataReceived(payload)]


def test_large_server_send_reaches_the_client_intact(make_pair, client_context):
    pair = make_pair(client_context(version=TLS12))
    pair.handshake()
    payload = b"x" * 300_000

    pair.server_send(payload)

    assert pair.client_receive() == payload


def test_data_sent_with_the_last_handshake_flight_is_delivered(make_pair, client_context):
    pair = make_pair(client_context(version=TLS13))
    for _ in range(5):
        try:
            pair.client.do_handshake()
            break
        except ssl.SSLWantReadError:
            pair.client_to_server()
            pair.server_to_client()
    pair.client.write(b"early")

    events = pair.client_to_server()  # client Finished and the data in one chunk

    assert [type(e) for e in events] == [HandshakeCompleted, DataReceived]
    assert events[1] == DataReceived(b"early")


def test_close_notify_from_the_client_is_reported(make_pair, client_context):
    pair = make_pair(client_context(version=TLS12))
    pair.handshake()

    with pytest.raises(ssl.SSLWantReadError):
        pair.client.unwrap()

    assert pair.client_to_server() == [CloseNotifyReceived()]
    assert pair.server.state is TlsSessionState.PEER_CLOSED
    assert pair.server.receive_data(b"anything after close_notify") == []


def test_close_sends_close_notify_to_the_client(make_pair, client_context):
    pair = make_pair(client_context(version=TLS13))
    pair.handshake()

    pair.server.close()
    pair.server_to_client()

    assert pair.client_receive() == b""
    assert pair.client_saw_close_notify
    assert pair.server.state is TlsSessionState.CLOSED
    assert not pair.server.can_send


def test_server_may_answer_after_the_client_close_notify_then_close(make_pair, client_context):
    pair = make_pair(client_context(version=TLS13))
    pair.handshake()
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.unwrap()
    pair.client_to_server()

    pair.server_send(b"last words")
    pair.server.close()
    pair.server_to_client()

    assert pair.client.read(100) == b"last words"


def test_close_is_idempotent_and_quiet_during_the_handshake(server_context):
    session = TlsSession(server_context)

    session.close()
    session.close()

    assert session.data_to_send() == b""
    assert session.state is TlsSessionState.CLOSED
    assert session.receive_data(b"\x16\x03\x01") == []


def test_send_before_the_handshake_raises_tls_state_error(server_context):
    with pytest.raises(TlsStateError, match="handshaking"):
        TlsSession(server_context).send(b"too early")


def test_data_to_send_is_empty_when_nothing_is_pending(server_context):
    assert TlsSession(server_context).data_to_send() == b""


# -- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "http request"),
        (b"\x16\x03\x01\x00\x05hello", ""),
        (b"\x00" * 64, ""),
    ],
)
def test_garbage_instead_of_a_client_hello_ends_in_tls_failed(server_context, garbage, reason):
    session = TlsSession(server_context)

    events = session.receive_data(garbage)

    assert len(events) == 1 and isinstance(events[0], TlsFailed)
    assert reason in events[0].reason and events[0].reason
    assert session.state is TlsSessionState.FAILED
    assert session.receive_data(b"more") == []


def test_failure_after_the_handshake_is_reported_once(make_pair, client_context):
    pair = make_pair(client_context(version=TLS12))
    pair.handshake()
    pair.client.write(b"data")
    record = bytearray(pair.client_out.read())
    record[-1] ^= 0xFF  # break the record's authentication tag

    events = pair.server.receive_data(bytes(record))

    assert [type(e) for e in events] == [TlsFailed]
    assert pair.server.receive_data(b"anything") == []
    with pytest.raises(TlsStateError):
        pair.server.send(b"x")


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def _feed(session: TlsSession, chunks: list[bytes]) -> list:
    events = []
    for chunk in chunks:
        events += session.receive_data(chunk)
        session.data_to_send()
    return events


def _assert_well_formed(events: list) -> None:
    allowed = (HandshakeCompleted, DataReceived, CloseNotifyReceived, TlsFailed)
    assert all(isinstance(e, allowed) for e in events)
    failures = [i for i, e in enumerate(events) if isinstance(e, TlsFailed)]
    assert failures in ([], [len(events) - 1])  # at most one, and nothing after it


@settings(deadline=None)  # OpenSSL work; a loaded CI machine must not make it flaky
@given(data=st.binary(max_size=4096), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_random_bytes_in_any_split_yield_only_events(server_context, data, cuts):
    session = TlsSession(server_context)

    _assert_well_formed(_feed(session, _split(data, cuts)))


@settings(deadline=None)
@given(
    position=st.integers(min_value=0),
    replacement=st.binary(min_size=1, max_size=16),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_corrupted_client_flights_in_any_split_yield_only_events(
    server_context, client_hello, position, replacement, cuts
):
    data = bytearray(client_hello)
    at = position % len(data)
    data[at : at + len(replacement)] = replacement
    session = TlsSession(server_context)

    _assert_well_formed(_feed(session, _split(bytes(data), cuts)))


@pytest.fixture(scope="module")
def client_hello(pki) -> bytes:
    """A real TLS 1.3 ClientHello from the stdlib client, for mutation."""
    client = test_pki.client_context(pki).wrap_bio(
        ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return out.read()
