"""The operator CLI against a real server: HTTPS through OpenDPS's own TLS front door.

The server is the one `opendps serve` runs (`app.wiring.build` + `app.serve.run`: dev CA,
server certificate, SQLite store, default instance, state.json, admin key), on 127.0.0.1 with
an ephemeral port, in a thread with its own event loop, because the CLI's HTTP client is
synchronous and runs in the test's thread. The CLI finds it the way an operator's shell does:
through `--data-dir` (state.json and admin.key).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from opendps.app.config import load_settings
from opendps.app.serve import RunningServerInfo, run
from opendps.app.wiring import build
from opendps.cli.commands import add_commands

SERVER_START_TIMEOUT_SECONDS = 60
SERVER_STOP_TIMEOUT_SECONDS = 30
# Variables a developer's shell may have set that would change what the CLI connects to.
CLEAN_ENV: dict[str, str | None] = {
    name: None
    for name in (
        "OPENDPS_CONNECTION_STRING",
        "OPENDPS_INSTANCE",
        "OPENDPS_ENDPOINT",
        "OPENDPS_CA_CERTIFICATE",
        "OPENDPS_DATA_DIR",
    )
}


@dataclass
class ThreadedServer:
    """`opendps serve` in a background thread; `stop()` drains it and closes its store."""

    data_dir: Path
    info: RunningServerInfo | None = None
    error: BaseException | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve()), name="opendps-test-server"
        )
        self._thread.start()
        if not self._ready.wait(SERVER_START_TIMEOUT_SECONDS):
            raise AssertionError("the test server did not start")
        if self.error is not None:
            raise AssertionError(f"the test server failed to start: {self.error!r}")

    async def _serve(self) -> None:
        settings = load_settings(
            {
                "data_dir": self.data_dir,
                "https_port": 0,
                "mqtt_port": 0,
                "amqp_port": 0,
                "bind": "127.0.0.1",
            },
            {},
        )
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            app = await build(settings)
        except BaseException as err:
            self.error = err
            self._ready.set()
            raise
        try:
            await run(app, on_ready=self._on_ready, stop=self._stop)
        except BaseException as err:
            self.error = err
            raise
        finally:
            self._ready.set()
            await app.close()

    def _on_ready(self, info: RunningServerInfo) -> None:
        self.info = info
        self._ready.set()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(SERVER_STOP_TIMEOUT_SECONDS)
            assert not self._thread.is_alive(), "the test server did not stop"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedServer]:
    running = ThreadedServer(tmp_path / "data")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@dataclass
class Cli:
    """Runs `opendps …` commands (the groups of cli.commands) against the test server."""

    data_dir: Path
    root: typer.Typer
    runner: CliRunner = field(default_factory=CliRunner)

    def run(
        self, *args: str, env: dict[str, str] | None = None, input: str | None = None
    ) -> Result:
        environment = {
            **CLEAN_ENV,
            "OPENDPS_DATA_DIR": str(self.data_dir),
            "COLUMNS": "200",
            **(env or {}),
        }
        return self.runner.invoke(
            self.root, list(args), env=environment, input=input, catch_exceptions=False
        )

    def ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = self.run(*args, env=env)
        assert result.exit_code == 0, (
            f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        )
        return result.stdout

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", env=env))

    def fails(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Assert exit code 1; return what went to stderr."""
        result = self.run(*args, env=env)
        assert result.exit_code == 1, (
            f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        )
        return result.stderr


def _root() -> typer.Typer:
    root = typer.Typer(name="opendps")

    @root.callback()
    def _opendps() -> None:
        """A root like cli/main.py's, holding only the operator groups under test."""

    add_commands(root)
    return root


@pytest.fixture
def cli(server: ThreadedServer) -> Cli:
    return Cli(server.data_dir, _root())
