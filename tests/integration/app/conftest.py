"""Fixtures for the application-layer integration tests: real servers on ephemeral ports.

Servers run in-process (on the test's event loop, through `opendps.app.serve.run`) or as a
subprocess (`python -m opendps serve`). They never bind the standard ports: every test passes
`--https-port` with a free port, or port 0, and binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from opendps.app import tasks
from opendps.app.config import Settings, load_settings
from opendps.app.serve import RunningServerInfo, run
from opendps.app.wiring import App, build

POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SUBPROCESS_START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_ssl_context(ca_file: Path | str) -> ssl.SSLContext:
    """Trust only the dev CA, with hostname checks and strict X.509 rules (Python 3.13's default)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def settings_for(data_dir: Path, **flags: Any) -> Settings:
    given: dict[str, Any] = {
        "data_dir": data_dir,
        "https_port": 0,
        "mqtt_port": 0,
        "amqp_port": 0,
        "bind": "127.0.0.1",
    }
    given.update(flags)
    defaults = given.pop("defaults", None)
    return load_settings(given, {}, defaults=defaults)


@dataclass
class InProcessServer:
    app: App
    info: RunningServerInfo
    stop: asyncio.Event
    task: asyncio.Task[int]

    @property
    def https_url(self) -> str:
        return self.info.status.endpoints.https

    def client(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=client_ssl_context(self.info.status.ca_certificate))
        return aiohttp.ClientSession(self.https_url, connector=connector)


@asynccontextmanager
async def serving(
    settings: Settings, *, prepare: Callable[[App], None] | None = None
) -> AsyncIterator[InProcessServer]:
    """Build and run a server on this loop; stop it (and close its store) on exit."""
    app = await build(settings)
    if prepare is not None:
        prepare(app)
    ready: asyncio.Future[RunningServerInfo] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = tasks.spawn(run(app, on_ready=ready.set_result, stop=stop), "test-server")
    try:
        done, _ = await asyncio.wait([ready, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises the startup error
        yield InProcessServer(app, ready.result(), stop, task)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            await app.close()


# -- subprocess servers ------------------------------------------------------------------------


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        return opendps_status(self.data_dir)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def opendps_status(data_dir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "opendps", "status", "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    body: dict[str, Any] = json.loads(out.stdout)
    return body


def start_process(tmp_path: Path, data_dir: Path, *args: str) -> ServerProcess:
    """`python -m opendps serve` with its output in a log file; returns once state.json exists."""
    log_file = tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log"
    command = [
        sys.executable,
        "-m",
        "opendps",
        "serve",
        "--data-dir",
        str(data_dir),
        "--bind",
        "127.0.0.1",
    ]
    # Never the standard device ports: a port the test does not choose is an ephemeral one.
    for flag in ("--mqtt-port", "--amqp-port"):
        if flag not in args:
            command += [flag, "0"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENDPS_")}
    with log_file.open("wb") as log:
        process = subprocess.Popen([*command, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(process, data_dir, log_file)
    deadline = time.monotonic() + SUBPROCESS_START_TIMEOUT_S
    while not (data_dir / "state.json").exists():
        if process.poll() is not None:
            raise AssertionError(f"opendps serve exited with {process.returncode}:\n{server.log()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"opendps serve did not start:\n{server.log()}")
        time.sleep(0.05)
    return server


@pytest.fixture
def server_processes() -> Iterator[list[ServerProcess]]:
    """Collects started processes and kills any a test left running."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh database on the local PostgreSQL; skips when PostgreSQL is unreachable."""
    asyncpg = pytest.importorskip("asyncpg")
    name = f"opendps_app_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as err:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is unreachable: {err}")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
