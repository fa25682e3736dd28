"""The server under test: started by the bench in a temporary data dir, or an existing one.

A started server is `python -m opendps serve` on free loopback ports (port 0: the OS picks,
and state.json says which), never the standard ones, with the per-instance registration rate
limit off (the bench is the load the limit exists to stop). Either way the bench learns the
endpoints, ID scope, CA and admin key from `<data-dir>/state.json` (app/status.py writes it;
the bench sits below app in the layers, so it reads the JSON itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

STATE_FILE = "state.json"
LOOPBACK = "127.0.0.1"
# First start creates the dev CA, certificate and database: seconds on a loaded machine.
STARTUP_TIMEOUT_SECONDS = 90.0
# The server drains for up to its shutdown timeout (20 s by default) on SIGTERM.
SHUTDOWN_TIMEOUT_SECONDS = 30.0
LOG_FILE = "server.log"


class ServerError(Exception):
    """The server could not be started or read (the message says why)."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the bench needs to know about a running server."""

    pid: int
    data_dir: Path
    id_scope: str
    host: str  # the name in the server certificate and the endpoints
    https_port: int
    mqtt_port: int
    amqp_port: int
    ca_file: Path
    admin_key: str
    service_connection_string: str | None
    database: str


def read_server_info(data_dir: Path) -> ServerInfo:
    """Raises ServerError when state.json or the admin key cannot be read."""
    path = data_dir / STATE_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        endpoints = body["endpoints"]
        https, mqtt, amqp = (urlsplit(endpoints[name]) for name in ("https", "mqtt", "amqp"))
        admin_key = Path(body["adminKeyFile"]).read_text(encoding="ascii").strip()
        return ServerInfo(
            pid=int(body["pid"]),
            data_dir=data_dir,
            id_scope=body["idScope"],
            host=https.hostname or "localhost",
            https_port=https.port or 443,
            mqtt_port=mqtt.port or 8883,
            amqp_port=amqp.port or 5671,
            ca_file=Path(body["caCertificate"]),
            admin_key=admin_key,
            service_connection_string=body["serviceConnectionString"],
            database=body["database"],
        )
    except FileNotFoundError:
        raise ServerError(f"no server is running with data dir {data_dir}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ServerError(f"{path} is unreadable: {err}") from None


@dataclass(frozen=True, slots=True)
class ServerOptions:
    database: str | None = None  # None: SQLite in the data dir
    workers: int = 1
    log_level: str = "warning"
    max_connections: int | None = None  # None: the server's default


@contextlib.contextmanager
def started_server(options: ServerOptions) -> Iterator[ServerInfo]:
    """Start a server in a temporary data dir; stop it (SIGTERM, then SIGKILL) on exit."""
    with tempfile.TemporaryDirectory(prefix="opendps-bench-") as temp:
        data_dir = Path(temp) / "data"
        log_path = Path(temp) / LOG_FILE
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                _serve_command(data_dir, options),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                yield _wait_for_state(process, data_dir, log_path)
            finally:
                _stop(process)


def _serve_command(data_dir: Path, options: ServerOptions) -> list[str]:
    command = [
        sys.executable, "-m", "opendps", "serve",
        "--data-dir", str(data_dir),
        "--bind", LOOPBACK,
        "--https-port", "0", "--mqtt-port", "0", "--amqp-port", "0",
        "--instance-registration-rate", "0",
        "--log-level", options.log_level,
    ]  # fmt: skip
    if options.database is not None:
        command += ["--database", options.database]
    if options.max_connections is not None:
        command += ["--max-connections", str(options.max_connections)]
    if options.workers > 1:
        # Only when asked: a single-process server is the default and needs no flag.
        command += ["--workers", str(options.workers)]
    return command


def _wait_for_state(process: subprocess.Popen[bytes], data_dir: Path, log_path: Path) -> ServerInfo:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"the server exited at start: {_tail(log_path)}")
        if (data_dir / STATE_FILE).exists():
            info = read_server_info(data_dir)
            if info.pid == process.pid:
                return info
        time.sleep(0.1)
    raise ServerError(f"the server did not start within {STARTUP_TIMEOUT_SECONDS:.0f} s")


def _tail(log_path: Path, lines: int = 15) -> str:
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
