"""The TLS server on real sockets (127.0.0.1, port 0) with stdlib `ssl` clients."""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl

import pytest
import uvloop
from OpenSSL import SSL
from tests import pki as test_pki

from opendps.tls.server import (
    EXTRA_CIPHER,
    EXTRA_PEER_CHAIN,
    EXTRA_SNI,
    EXTRA_TLS_VERSION,
    TlsLimits,
    TlsServer,
    start_tls_server,
)

LOOPBACK = "127.0.0.1"


class EchoProtocol(asyncio.Protocol):
    """Echoes every byte; records what the TLS transport told it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.writelines([data[:1], data[1:]])

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def echo_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(len(data))


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """What arrives before the server closes the connection (a reset counts as closed)."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


async def eventually(predicate, within: float = 5.0) -> None:
    """Wait until `predicate()` holds (server state that has no event to wait on)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def tls_log_records(caplog, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "opendps.tls.server" and r.getMessage() == event]


# -- the inner protocol's view ----------------------------------------------------------------


async def test_inner_protocol_gets_plaintext_and_the_tls_extra_info(start, connect, pki):
    protocols: list[EchoProtocol] = []
    server = await start(lambda: protocols.append(EchoProtocol()) or protocols[-1])

    async with asyncio.timeout(10):
        reader, writer = await connect(server, identity=pki.device)
        assert await echo_once(reader, writer, b"hello device") == b"hello device"

    transport = protocols[0].transport
    assert transport.get_extra_info(EXTRA_PEER_CHAIN) == (
        pki.device.certificate,
        pki.device_intermediate.certificate,
    )
    assert transport.get_extra_info(EXTRA_SNI) == "localhost"
    assert transport.get_extra_info(EXTRA_TLS_VERSION) == "TLSv1.3"
    assert transport.get_extra_info(EXTRA_CIPHER) == writer.get_extra_info("cipher")[0]
    assert isinstance(transport.get_extra_info("sslcontext"), SSL.Context)
    assert transport.get_extra_info("peername") == writer.get_extra_info("sockname")
    assert transport.get_extra_info("sockname") == (LOOPBACK, server.ports[0])
    assert transport.get_extra_info("socket").getsockname() == (LOOPBACK, server.ports[0])
    assert transport.get_extra_info("no such key", "fallback") == "fallback"
    assert not transport.can_write_eof()
    writer.close()


async def test_tls12_client_without_certificate_gets_an_empty_chain(start, connect):
    protocols: list[EchoProtocol] = []
    server = await start(lambda: protocols.append(EchoProtocol()) or protocols[-1])

    async with asyncio.timeout(10):
        reader, writer = await connect(server, version=ssl.TLSVersion.TLSv1_2)
        await echo_once(reader, writer, b"x")

    assert protocols[0].transport.get_extra_info(EXTRA_PEER_CHAIN) == ()
    assert protocols[0].transport.get_extra_info(EXTRA_TLS_VERSION) == "TLSv1.2"
    writer.close()


async def test_inner_close_sends_close_notify_and_the_client_sees_a_clean_eof(start, connect):
    protocols: list[EchoProtocol] = []
    server = await start(lambda: protocols.append(EchoProtocol()) or protocols[-1])

    async with asyncio.timeout(10):
        reader, writer = await connect(server)
        await echo_once(reader, writer, b"x")
        protocols[0].transport.close()
        assert protocols[0].transport.is_closing()

        assert await reader.read() == b""
        assert await protocols[0].lost is None
    await eventually(lambda: server.open_connections == 0)
    writer.close()


async def test_client_close_notify_reaches_the_inner_protocol_as_eof(start, connect):
    protocols: list[EchoProtocol] = []
    server = await start(lambda: protocols.append(EchoProtocol()) or protocols[-1])

    async with asyncio.timeout(10):
        reader, writer = await connect(server)
        await echo_once(reader, writer, b"x")
        writer.close()
        await writer.wait_closed()

        assert await protocols[0].lost is None
    assert protocols[0].eof


async def test_write_eof_is_refused_as_tls_has_no_half_close(start, connect):
    protocols: list[EchoProtocol] = []
    server = await start(lambda: protocols.append(EchoProtocol()) or protocols[-1])
    async with asyncio.timeout(10):
        reader, writer = await connect(server)
        await echo_once(reader, writer, b"x")

    with pytest.raises(NotImplementedError):
        protocols[0].transport.write_eof()
    writer.close()


# -- failures and limits ----------------------------------------------------------------------


async def test_garbage_instead_of_a_client_hello_closes_and_the_server_keeps_serving(
    start, connect, caplog
):
    caplog.set_level(logging.DEBUG, logger="opendps.tls.server")
    server = await start(EchoProtocol)

    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(LOOPBACK, server.ports[0])
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await read_until_closed(reader)
        writer.close()

        tls_reader, tls_writer = await connect(server)
        assert await echo_once(tls_reader, tls_writer, b"still serving") == b"still serving"
        tls_writer.close()

    [record] = tls_log_records(caplog, "tls.handshake_failed")
    assert record.levelno == logging.INFO
    assert record.opendps_fields["reason"] == "http request"
    assert record.opendps_fields["peer"] == "{}:{}".format(*writer.get_extra_info("sockname"))


async def test_silent_client_is_dropped_after_the_handshake_timeout(start, caplog):
    caplog.set_level(logging.DEBUG, logger="opendps.tls.server")
    server = await start(EchoProtocol, limits=TlsLimits(handshake_timeout_seconds=0.2))

    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(LOOPBACK, server.ports[0])
        started = asyncio.get_running_loop().time()
        assert await read_until_closed(reader) == b""
        elapsed = asyncio.get_running_loop().time() - started
        await eventually(lambda: server.open_connections == 0)

    assert 0.15 < elapsed < 3
    [record] = tls_log_records(caplog, "tls.handshake_failed")
    assert record.opendps_fields["reason"] == "handshake timeout"
    writer.close()


async def test_connections_over_the_limit_are_closed_at_once_and_counted(start, connect, caplog):
    caplog.set_level(logging.WARNING, logger="opendps.tls.server")
    deltas: list[int] = []
    server = await start(
        EchoProtocol, limits=TlsLimits(max_connections=2), on_connection_change=deltas.append
    )

    async with asyncio.timeout(10):
        first = await connect(server)
        second = await connect(server)
        await echo_once(*first, b"1")
        await echo_once(*second, b"2")
        assert server.open_connections == 2

        reader, writer = await asyncio.open_connection(LOOPBACK, server.ports[0])
        assert await read_until_closed(reader) == b""
        writer.close()
        assert server.open_connections == 2

        first[1].close()
        await eventually(lambda: server.open_connections == 1)
        third = await connect(server)
        assert await echo_once(*third, b"3") == b"3"

    assert deltas == [1, 1, -1, 1]
    [record] = tls_log_records(caplog, "tls.connection_refused")
    assert record.opendps_fields["limit"] == 2
    second[1].close()
    third[1].close()


async def test_500_concurrent_handshakes_all_succeed(start, connect):
    server = await start(EchoProtocol)

    async def one_device(number: int) -> bytes:
        reader, writer = await connect(server)
        try:
            return await echo_once(reader, writer, b"device %d" % number)
        finally:
            writer.close()

    async with asyncio.timeout(120):
        answers = await asyncio.gather(*(one_device(n) for n in range(500)))

    assert answers == [b"device %d" % n for n in range(500)]


async def test_close_stops_accepting_and_wait_closed_waits_for_open_connections(start, connect):
    server = await start(EchoProtocol)
    port = server.ports[0]

    async with asyncio.timeout(10):
        reader, writer = await connect(server)
        await echo_once(reader, writer, b"x")
        server.close()

        with pytest.raises(OSError):
            await asyncio.open_connection(LOOPBACK, port)
        assert not server.is_serving()
        waiting = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.1)
        assert not waiting.done()  # one connection is still open

        writer.close()
        await waiting
    assert server.open_connections == 0


async def test_abort_all_ends_every_connection(start, connect):
    protocols: list[EchoProtocol] = []
    server = await start(lambda: protocols.append(EchoProtocol()) or protocols[-1])

    async with asyncio.timeout(10):
        clients = [await connect(server) for _ in range(3)]
        for reader, writer in clients:
            await echo_once(reader, writer, b"x")
        server.close()
        server.abort_all()
        await server.wait_closed()

        for reader, _ in clients:
            assert await read_until_closed(reader) == b""
        assert all(p.lost.done() for p in protocols)


async def test_binding_a_taken_port_raises_os_error_unchanged(start, server_context):
    server = await start(EchoProtocol)

    with pytest.raises(OSError) as raised:
        await start_tls_server(
            EchoProtocol, host=LOOPBACK, port=server.ports[0], context=server_context
        )
    assert raised.value.errno == errno.EADDRINUSE


# -- flow control -----------------------------------------------------------------------------


class PausingProtocol(EchoProtocol):
    """Pauses reading as soon as it is connected; collects what it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.received = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.received += data


async def test_paused_inner_protocol_gets_nothing_until_resumed_then_everything_in_order(
    start, connect
):
    protocols: list[PausingProtocol] = []
    server = await start(
        lambda: protocols.append(PausingProtocol()) or protocols[-1],
        limits=TlsLimits(max_buffered_plaintext=64 * 1024),
    )
    payload = bytes(range(256)) * 4096  # 1 MiB

    async with asyncio.timeout(10):
        reader, writer = await connect(server)
        writer.write(payload)
        await eventually(lambda: bool(protocols))
        transport = protocols[0].transport
        tcp = transport._connection.tcp  # white-box: the socket must stop being read
        await eventually(lambda: not tcp.is_reading())
        assert protocols[0].received == b""
        assert not transport.is_reading()

        transport.resume_reading()
        await eventually(lambda: len(protocols[0].received) == len(payload))

    assert protocols[0].received == payload
    assert tcp.is_reading()
    writer.close()


class FloodProtocol(EchoProtocol):
    """On any data, writes `FLOOD` bytes; records pause/resume_writing."""

    FLOOD = 16 * 1024 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.paused = asyncio.Event()
        self.resumed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=64 * 1024)
        self.transport.write(b"z" * self.FLOOD)

    def pause_writing(self) -> None:
        self.paused.set()

    def resume_writing(self) -> None:
        self.resumed.set()


async def test_a_slow_reader_makes_the_inner_protocol_pause_writing(start, connect):
    protocols: list[FloodProtocol] = []
    server = await start(lambda: protocols.append(FloodProtocol()) or protocols[-1])

    async with asyncio.timeout(20):
        reader, writer = await connect(server)
        writer.write(b"go")
        await eventually(lambda: bool(protocols))
        await protocols[0].paused.wait()
        assert protocols[0].transport.get_write_buffer_size() > 64 * 1024

        await reader.readexactly(FloodProtocol.FLOOD)
        await protocols[0].resumed.wait()
    writer.close()


# -- the same server on uvloop, the loop `opendps serve` uses ---------------------------------


def test_server_works_on_uvloop(server_context, pki):
    async def scenario() -> bytes:
        server: TlsServer = await start_tls_server(
            EchoProtocol, host=LOOPBACK, port=0, context=server_context
        )
        try:
            reader, writer = await asyncio.open_connection(
                LOOPBACK,
                server.ports[0],
                ssl=test_pki.client_context(pki, identity=pki.device),
                server_hostname="localhost",
            )
            answer = await echo_once(reader, writer, b"on uvloop")
            writer.close()
            return answer
        finally:
            server.close()
            server.abort_all()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(asyncio.wait_for(scenario(), 10)) == b"on uvloop"
