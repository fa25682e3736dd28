"""End-to-end harness: a real `opendps serve` process on the standard ports, real SDK clients.

Used by tests/e2e/conftest.py (fixtures) and the test modules (helpers).

The official clients only dial 443 (and 8883 / 5671), so these tests bind the standard ports on
loopback and run one server at a time. The `server` fixture is session-scoped and parametrised
over the store backends; pytest groups the tests by backend, so each backend's server starts once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).parent / "node"
STANDARD_HTTPS_PORT = 443
STANDARD_MQTT_PORT = 8883
STANDARD_AMQP_PORT = 5671
SERVER_START_TIMEOUT_S = 60
POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class RunningServer:
    data_dir: Path
    status: dict[str, Any]
    backend: str
    process: subprocess.Popen[bytes]
    log_file: Path

    @property
    def connection_string(self) -> str:
        return str(self.status["serviceConnectionString"])

    @property
    def ca_file(self) -> str:
        return str(self.status["caCertificate"])

    @property
    def id_scope(self) -> str:
        return str(self.status["idScope"])

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")


def can_bind(port: int) -> str | None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            return f"cannot bind 127.0.0.1:{port} ({err.strerror}); end-to-end tests need root and a free port {port}"
    return None


def _postgres_database() -> str | None:
    """Create a fresh database for one server run; None if PostgreSQL is unreachable."""
    asyncpg = pytest.importorskip("asyncpg")
    import asyncio

    name = f"opendps_e2e_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as err:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is unreachable: {err}")
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def _drop_postgres_database(url: str) -> None:
    import asyncio

    import asyncpg

    name = url.rsplit("/", 1)[1]

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def _wait_healthy(
    ca_file: str, port: int, process: subprocess.Popen[bytes], log_file: Path
) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"opendps serve exited with {process.returncode}:\n{log_file.read_text()}"
            )
        try:
            with urllib.request.urlopen(
                f"https://localhost:{port}/healthz", context=context, timeout=2
            ) as resp:
                if resp.status == 200:
                    return
        except (OSError, ssl.SSLError):
            time.sleep(0.2)
    raise RuntimeError(f"opendps serve did not become healthy:\n{log_file.read_text()}")


def start_server(tmp_dir: Path, backend: str, extra_args: list[str] | None = None) -> RunningServer:
    data_dir = tmp_dir / f"data-{backend}"
    args = [
        sys.executable,
        "-m",
        "opendps",
        "serve",
        "--data-dir",
        str(data_dir),
        "--https-port",
        "443",
        "--mqtt-port",
        str(STANDARD_MQTT_PORT),
        "--amqp-port",
        str(STANDARD_AMQP_PORT),
    ]
    args += ["--bind", "127.0.0.1", "--public-host", "localhost"]
    database = None
    if backend == "postgres":
        database = _postgres_database()
        args += ["--database", str(database)]
    args += extra_args or []
    log_file = tmp_dir / f"server-{backend}.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    status: dict[str, Any] = {}
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline and not (data_dir / "state.json").exists():
        if process.poll() is not None:
            break
        time.sleep(0.1)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "opendps", "status", "--json", "--data-dir", str(data_dir)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        status = json.loads(out.stdout)
        _wait_healthy(status["caCertificate"], STANDARD_HTTPS_PORT, process, log_file)
    except BaseException:
        process.kill()
        process.wait()
        if database:
            _drop_postgres_database(database)
        raise
    server = RunningServer(data_dir, status, backend, process, log_file)
    server.status["_database"] = database
    return server


def stop_server(server: RunningServer) -> int:
    server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        code = server.process.wait()
    database = server.status.get("_database")
    if database:
        _drop_postgres_database(str(database))
    return code


def run_node(
    script: str, args: list[str], env: dict[str, str], timeout: float = 120
) -> dict[str, Any]:
    """Run a Node scenario script; return the JSON object it printed (raises on a failure)."""
    full_env = dict(os.environ, **env)
    proc = subprocess.run(
        ["node", str(NODE_DIR / script), *args],
        capture_output=True,
        env=full_env,
        timeout=timeout,
        cwd=NODE_DIR,
    )
    try:
        result: dict[str, Any] = json.loads(proc.stdout or b"{}")
    except json.JSONDecodeError:
        raise AssertionError(
            f"{script} printed no JSON (exit {proc.returncode}): {proc.stdout!r} {proc.stderr!r}"
        ) from None
    if proc.returncode != 0:
        raise AssertionError(
            f"{script} {args} failed: {result} stderr={proc.stderr.decode(errors='replace')}"
        )
    return result
