"""`opendps serve` end to end on ephemeral ports: TLS, health, metrics, state, reuse, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import stat
import time
from pathlib import Path

import pytest
from aiohttp import web
from tests.integration.app.conftest import (
    ServerProcess,
    client_ssl_context,
    free_port,
    serving,
    settings_for,
    start_process,
)

from opendps.app.bootstrap import BUILTIN_HUB_HOST_NAME
from opendps.app.config import MAX_PORT, PORT_FALLBACK_OFFSET
from opendps.app.serve import StartupError
from opendps.app.wiring import App
from opendps.attestation.sas import build_sas_token
from opendps.model.hub import HubKind
from opendps.model.instance import ALL_RIGHTS, OWNER_POLICY_NAME

STATUS_KEYS = {
    "idScope",
    "serviceConnectionString",
    "caCertificate",
    "endpoints",
    "dataDir",
    "database",
}


async def test_server_answers_healthz_and_metrics_over_tls_with_the_dev_ca(tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path / "data")) as server, server.client() as client:
        async with client.get("/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok", "store": "ok"}
        async with client.get("/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            text = await response.text()
    # The /healthz request above was timed under its route, and the TLS connection counted.
    assert (
        'opendps_http_request_duration_seconds_count{method="GET",route="/healthz",status="2xx"} 1.0'
        in text
    )
    assert 'opendps_open_connections{listener="https"} 1.0' in text


async def test_first_start_creates_the_data_dir_and_the_default_instance(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with serving(settings_for(data_dir)) as server:
        store = server.app.store
        instance = server.app.default_instance.instance
        assert instance.name == "default" and instance.id_scope.startswith("0ne")
        policy = await store.get_access_policy(instance.id, OWNER_POLICY_NAME)
        assert policy is not None and policy.rights == ALL_RIGHTS
        [hub] = await store.list_linked_hubs(instance.id)
        assert (hub.kind, hub.host_name) == (HubKind.BUILTIN, BUILTIN_HUB_HOST_NAME)
        for name in ("admin.key", "ca.key", "server.key", "state.json"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
        assert (data_dir / "opendps.db").exists()
        assert server.info.status.service_connection_string == (
            f"HostName=localhost:{server.https_url.rsplit(':', 1)[1]};"
            f"SharedAccessKeyName={OWNER_POLICY_NAME};SharedAccessKey={policy.primary_key}"
        )
    assert not (data_dir / "state.json").exists(), "a clean stop removes state.json"


async def test_second_start_reuses_id_scope_keys_and_ca(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with serving(settings_for(data_dir)) as first:
        first_status = first.info.status
    ca_pem = (data_dir / "ca.pem").read_bytes()
    admin_key = (data_dir / "admin.key").read_bytes()
    async with serving(settings_for(data_dir)) as second:
        second_status = second.info.status
        assert len(await second.app.store.list_instances()) == 1
    assert second_status.id_scope == first_status.id_scope
    assert second_status.service_connection_string is not None
    key = second_status.service_connection_string.rsplit("SharedAccessKey=", 1)[1]
    assert first_status.service_connection_string is not None
    assert first_status.service_connection_string.endswith(key)
    assert (data_dir / "ca.pem").read_bytes() == ca_pem
    assert (data_dir / "admin.key").read_bytes() == admin_key


def _occupied_port_with_free_fallback() -> tuple[socket.socket, int]:
    """A listening socket on a port whose port + 8000 is free (held by the caller)."""
    for _ in range(50):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        if port + PORT_FALLBACK_OFFSET <= MAX_PORT:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + PORT_FALLBACK_OFFSET))
                    return holder, port
                except OSError:
                    pass
        holder.close()
    raise AssertionError("found no port whose fallback is free")


async def test_a_taken_default_port_falls_back_to_port_plus_8000(tmp_path: Path) -> None:
    holder, port = _occupied_port_with_free_fallback()
    with holder:
        # The default port is injected, so the operator did not set it: fallback applies.
        settings = settings_for(tmp_path / "data", https_port=None, defaults={"https_port": port})
        async with serving(settings) as server, server.client() as client:
            assert server.https_url == f"https://localhost:{port + PORT_FALLBACK_OFFSET}"
            [message] = server.info.fallbacks
            assert f"port {port} could not be bound" in message
            async with client.get("/healthz") as response:
                assert response.status == 200


async def test_a_taken_explicit_port_refuses_to_start(tmp_path: Path) -> None:
    holder, port = _occupied_port_with_free_fallback()
    with holder:
        with pytest.raises(StartupError, match=f"cannot listen for https on port {port}"):
            async with serving(settings_for(tmp_path / "data", https_port=port)):
                pass


@pytest.mark.postgres
async def test_postgresql_store_serves_and_reports_unhealthy_when_the_database_goes(
    tmp_path: Path, postgres_url: str
) -> None:
    import asyncpg

    settings = settings_for(tmp_path / "data", database=postgres_url)
    async with serving(settings) as server, server.client() as client:
        assert server.info.status.database == postgres_url
        assert server.app.default_instance.created
        async with client.get("/healthz") as response:
            assert response.status == 200
        name = postgres_url.rsplit("/", 1)[1]
        admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        async with client.get("/healthz") as response:
            assert response.status == 503
            assert await response.json() == {"status": "unavailable", "store": "unreachable"}


async def test_sigterm_lets_an_in_flight_request_finish_then_stops(tmp_path: Path) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        await asyncio.sleep(0.2)  # still working after the signal
        return web.Response(text="finished")

    def add_slow_route(app: App) -> None:
        app.web_app.router.add_get("/test/slow", slow)

    async with serving(settings_for(tmp_path / "data"), prepare=add_slow_route) as server:
        async with server.client() as client:
            request = asyncio.ensure_future(client.get("/test/slow"))
            await entered.wait()
            os.kill(os.getpid(), signal.SIGTERM)  # caught by the server's loop handler
            await asyncio.sleep(0.1)
            assert server.stop.is_set()
            release.set()
            response = await request
            assert response.status == 200 and await response.text() == "finished"
            response.release()
        assert await asyncio.wait_for(server.task, 10) == 0


def _https_get(status: dict[str, object], path: str) -> tuple[int, bytes]:
    import urllib.request

    ca = str(status["caCertificate"])
    endpoints = status["endpoints"]
    assert isinstance(endpoints, dict)
    with urllib.request.urlopen(
        endpoints["https"] + path, context=client_ssl_context(ca), timeout=10
    ) as response:
        return response.status, response.read()


def _wait_healthy(server: ServerProcess) -> dict[str, object]:
    status = server.status()
    deadline = time.monotonic() + 30
    while True:
        try:
            assert _https_get(status, "/healthz")[0] == 200
            return status
        except (OSError, ssl.SSLError):
            if time.monotonic() > deadline or server.process.poll() is not None:
                raise AssertionError(f"server not healthy:\n{server.log()}") from None
            time.sleep(0.1)


def test_status_json_matches_the_running_server_and_a_restart_reuses_it(
    tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    port, mqtt_port, amqp_port = free_port(), free_port(), free_port()
    ports = ("--https-port", str(port), "--mqtt-port", str(mqtt_port))
    ports += ("--amqp-port", str(amqp_port))
    server = start_process(tmp_path, data_dir, *ports)
    server_processes.append(server)
    status = _wait_healthy(server)
    assert set(status) == STATUS_KEYS
    assert status["endpoints"] == {
        "https": f"https://localhost:{port}",
        "mqtt": f"mqtts://localhost:{mqtt_port}",
        "amqp": f"amqps://localhost:{amqp_port}",
    }
    assert status["caCertificate"] == str(data_dir / "ca.pem")
    assert status["dataDir"] == str(data_dir)
    assert status["database"] == f"sqlite:///{data_dir}/opendps.db"
    assert str(status["serviceConnectionString"]).startswith(f"HostName=localhost:{port};")
    assert server.terminate() == 0, server.log()
    assert not (data_dir / "state.json").exists()

    again = start_process(tmp_path, data_dir, *ports)
    server_processes.append(again)
    assert _wait_healthy(again) == status
    assert again.terminate() == 0, again.log()


def test_sigterm_to_the_process_drains_an_in_flight_service_request_and_exits_0(
    tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    port = free_port()
    server = start_process(tmp_path, tmp_path / "data", "--https-port", str(port))
    server_processes.append(server)
    status = _wait_healthy(server)
    connection = dict(
        part.split("=", 1) for part in str(status["serviceConnectionString"]).split(";")
    )
    token = build_sas_token(
        connection["HostName"],
        connection["SharedAccessKey"],
        int(time.time()) + 3600,
        key_name=connection["SharedAccessKeyName"],
    )
    body = b'{"registrationId": "drain-test", "attestation": {"type": "symmetricKey"}}'
    head = (
        f"PUT /enrollments/drain-test?api-version=2021-10-01 HTTP/1.1\r\n"
        f"Host: localhost:{port}\r\nAuthorization: {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    context = client_ssl_context(str(status["caCertificate"]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(head + body[:10])  # the handler is now waiting for the rest of the body
            time.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert server.process.poll() is None, "the server waits for the in-flight request"
            tls.sendall(body[10:])
            reply = _read_http_response(tls)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert server.process.wait(timeout=30) == 0, server.log()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def _read_http_response(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_status_without_a_running_server_says_how_to_start_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "opendps", "status", "--json", "--data-dir", str(tmp_path)],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert b"opendps serve" in result.stderr
