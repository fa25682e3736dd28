"""`opendps serve --workers N`: one supervisor, N processes sharing every port (app/workers.py)."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import ssl
from pathlib import Path

import pytest
from tests.integration.app.conftest import (
    ServerProcess,
    client_ssl_context,
    free_port,
    settings_for,
    start_process,
)

from opendps.app.config import PORT_FALLBACK_OFFSET
from opendps.app.workers import WORKER_HEADER, prepare, reserve_port

# SO_REUSEPORT spreads connections by a hash of their addresses, so each connection from a new
# source port picks a worker at random: 40 of them all landing on one of two workers has a
# probability of 2**-39.
CONNECTIONS = 40
WORKER_READY = re.compile(r"server\.worker_ready worker=(\d+) pid=(\d+)")


def _worker_pids(server: ServerProcess) -> dict[str, int]:
    return {index: int(pid) for index, pid in WORKER_READY.findall(server.log())}


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _https_worker(port: int, context: ssl.SSLContext) -> str:
    """GET /healthz on a new connection; the worker that answered (its response header)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
    head = response.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 200"), head
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:])
    return headers[WORKER_HEADER]


def test_reserved_port_refuses_a_port_another_server_listens_on() -> None:
    with socket.socket() as listener:
        # Even a listener that allows SO_REUSEPORT sharing makes the port taken, not shared.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(OSError) as taken:
            reserve_port("127.0.0.1", port)
    assert taken.value.errno == errno.EADDRINUSE


def test_a_reserved_port_holds_the_port_but_takes_no_connection() -> None:
    reservation = reserve_port("127.0.0.1", 0)
    try:
        port = reservation.sockets[0].getsockname()[1]
        with pytest.raises(OSError) as taken, socket.socket() as other:
            other.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
        with pytest.raises(ConnectionRefusedError), socket.socket() as client:
            client.connect(("127.0.0.1", port))
    finally:
        reservation.close()


def _taken_port_with_free_fallback(listener: socket.socket) -> int:
    """Bind `listener` to a port whose fallback (port + 8000) is free; return the port."""
    while True:
        port = free_port()
        if port + PORT_FALLBACK_OFFSET > 65535:
            continue
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + PORT_FALLBACK_OFFSET))
            listener.bind(("127.0.0.1", port))
        except OSError:
            continue
        listener.listen()
        return port


async def test_the_supervisor_bootstraps_once_and_chooses_fallback_ports_for_all(
    tmp_path: Path,
) -> None:
    with socket.socket() as other_server:
        taken = _taken_port_with_free_fallback(other_server)
        # A default (not explicit) port that is taken falls back, as with one process.
        settings = settings_for(
            tmp_path / "data", workers=2, https_port=None, defaults={"https_port": taken}
        )
        prepared = await prepare(settings)
    try:
        assert prepared.ports.https == taken + PORT_FALLBACK_OFFSET
        assert prepared.status.endpoints.https.endswith(f":{taken + PORT_FALLBACK_OFFSET}")
        assert len(prepared.fallbacks) == 1 and str(taken) in prepared.fallbacks[0]
        # Bootstrapped before any worker exists: PKI, database with its default instance.
        assert (tmp_path / "data" / "ca.pem").exists() and prepared.status.id_scope
    finally:
        for reservation in prepared.reservations:
            reservation.close()


def test_workers_share_the_ports_and_stop_together_on_sigterm(
    tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    https_port = free_port()
    server = start_process(tmp_path, data_dir, "--workers", "2", "--https-port", str(https_port))
    server_processes.append(server)
    status = server.status()
    assert status["endpoints"]["https"] == f"https://localhost:{https_port}"
    state = (data_dir / "state.json").read_text()
    assert f'"pid": {server.process.pid}' in state  # the supervisor's pid, not a worker's

    context = client_ssl_context(status["caCertificate"])
    answered = {_https_worker(https_port, context) for _ in range(CONNECTIONS)}
    assert answered == {"1", "2"}
    pids = _worker_pids(server)
    assert set(pids) == {"1", "2"} and server.process.pid not in pids.values()

    assert server.terminate() == 0
    assert not any(_is_running(pid) for pid in pids.values())
    assert not (data_dir / "state.json").exists()
    log = server.log()
    assert log.count("server.stopped") == 2  # each worker drained


def test_a_worker_that_dies_stops_the_others_and_fails_the_server(
    tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    server = start_process(tmp_path, data_dir, "--workers", "2", "--https-port", "0")
    server_processes.append(server)
    pids = _worker_pids(server)
    assert set(pids) == {"1", "2"}

    os.kill(pids["1"], signal.SIGKILL)
    assert server.process.wait(timeout=60) == 1
    assert not _is_running(pids["2"])
    assert not (data_dir / "state.json").exists()
    assert "server.worker_died worker=1" in server.log()
